"""Backends are chosen by URL scheme and shared per process.

``load_backend("storage", settings)`` returns the same instance for the same configuration, so the resource app,
the heartbeat and a Flask view reached through the environ all see one memory store or one connection pool.
"""
from __future__ import annotations

import importlib
import threading
from typing import Any, Dict, Mapping, Optional, Tuple

from wsgicliquet.settings import BACKEND_SCHEMES, ConfigurationError, Settings, load_settings

__all__ = ["load_backend", "import_string", "MODULES", "clear_backends"]

# kind -> scheme -> "module:Class"
MODULES: Dict[str, Dict[str, str]] = {
    kind: {scheme: f"wsgicliquet.{kind}.{module}:{cls}" for scheme, module in BACKEND_SCHEMES.items()}
    for kind, cls in (("storage", "Storage"), ("cache", "Cache"), ("permission", "Permission"))
}
#: kind -> the contract its backends subclass.
CONTRACTS: Dict[str, str] = {"storage": "wsgicliquet.storage:Storage", "cache": "wsgicliquet.cache:Cache",
                             "permission": "wsgicliquet.permission:Permission"}
# The classes are named after their module (memory.Storage, postgresql.Storage...), so the mapping stays uniform.

_SHARED_OPTIONS = ("redis_key_prefix",)
_instances: Dict[Tuple[str, str, str, Tuple[Tuple[str, str], ...]], Any] = {}
_lock = threading.Lock()


def import_string(path: str, setting: Optional[str] = None) -> Any:
    """Import ``package.module:Name`` (or ``package.module.Name``).

    ``setting`` names the setting the path came from, so that a typo stops start-up with an error saying where.
    """
    if ":" in path:
        module_name, _, attribute = path.partition(":")
    else:
        module_name, _, attribute = path.rpartition(".")
    try:
        if not module_name:
            raise ImportError("expected a dotted path such as package.module:Name")
        module = importlib.import_module(module_name)
        return getattr(module, attribute) if attribute else module
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        if setting:
            raise ConfigurationError(f"Setting {setting!r} has an invalid value {path!r}: "
                                     f"cannot import it ({exc})") from exc
        raise ConfigurationError(f"Cannot import {path!r}: {exc}") from exc


def load_backend(kind: str, settings: Mapping[str, Any]) -> Optional[Any]:
    """The configured backend of ``kind`` (storage, cache, permission), or None when its URL is empty.

    ``settings`` may be the plain dict given to ``build_pipeline()`` or ``ResourceApp``: it is completed with the
    defaults and the environment, so that it names the same instance those use (one memory store per process).
    """
    if not isinstance(settings, Settings):
        settings = load_settings(settings)
    url = settings.get(f"{kind}_url") or ""
    dotted = settings.get(f"{kind}_backend") or ""
    if not url and not dotted:
        return None
    # Every option of this backend kind (pool size, key prefixes...) is part of its identity.
    key = (kind, url, dotted, tuple(sorted((name, repr(value)) for name, value in settings.items()
                                           if name.startswith(f"{kind}_") or name in _SHARED_OPTIONS)))
    instance = _instances.get(key)
    if instance is not None:
        return instance
    with _lock:
        instance = _instances.get(key)
        if instance is None:
            if not dotted:
                scheme = url.split("://", 1)[0]
                try:
                    dotted = MODULES[kind][BACKEND_SCHEMES[scheme]]
                except KeyError:
                    raise ConfigurationError(
                        f"Setting '{kind}_url' has an invalid value {url!r}: unknown backend") from None
            setting = f"{kind}_backend" if settings.get(f"{kind}_backend") else None
            cls = import_string(dotted, setting)
            base = import_string(CONTRACTS[kind])
            # A wrong class stops start-up naming the setting (PROTOCOL.md §17), not the first request using it.
            if not (isinstance(cls, type) and issubclass(cls, base)):
                raise ConfigurationError(f"Setting {setting or kind + '_url'!r} has an invalid value {dotted!r}: "
                                         f"not a subclass of {CONTRACTS[kind]}")
            instance = cls.from_settings(dict(settings), prefix=kind)
            if not isinstance(instance, base):
                raise ConfigurationError(f"Setting {setting or kind + '_url'!r} has an invalid value {dotted!r}: "
                                         f"its from_settings() returned {instance!r}, not a {CONTRACTS[kind]}")
            _instances[key] = instance
    return instance


def clear_backends() -> None:
    """Forget the shared instances (tests that reconfigure a backend)."""
    with _lock:
        _instances.clear()


def missing_extra(extra: str, package: str) -> ImportError:
    """The error raised when an optional backend is used without its extra installed."""
    return ImportError(f"This backend needs {package}: pip install 'wsgicliquet[{extra}]'")
