"""Put the configured storage, cache and permission backends in the environ.

Use it so that any view below (a Flask or Bottle view storing game scores, say) reaches the same backends as the
resource app: ``environ["wsgicliquet.storage"]``.  The backends are created once, when the pipeline is built.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Mapping, Optional

from wsgicliquet import environ as keys
from wsgicliquet.backends import load_backend
from wsgicliquet.pipeline import make_filter_factory

__all__ = ["Backends", "filter_factory"]


class Backends:
    def __init__(self, app: Callable, *, storage: Any = None, cache: Any = None, permission: Any = None,
                 settings: Optional[Mapping[str, Any]] = None) -> None:
        self.app = app
        self.items = [(key, value) for key, value in ((keys.STORAGE, storage), (keys.CACHE, cache),
                                                      (keys.PERMISSION, permission), (keys.SETTINGS, settings))
                      if value is not None]

    @classmethod
    def from_settings(cls, app: Callable, settings: Mapping[str, Any]) -> "Backends":
        return cls(app, storage=load_backend("storage", settings), cache=load_backend("cache", settings),
                   permission=load_backend("permission", settings), settings=settings)

    def __call__(self, environ: Dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        for key, value in self.items:
            environ.setdefault(key, value)
        return self.app(environ, start_response)


filter_factory = make_filter_factory(Backends)
