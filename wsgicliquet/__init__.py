"""wsgicliquet: the Cliquet JSON REST protocol as independent WSGI middlewares and a resource app.

Optional parts (PostgreSQL, Redis, StatsD, Sentry) are imported lazily and fail with the extra to install.
"""
from __future__ import annotations

from typing import Any

from wsgicliquet.errors import ERRORS, HTTPError
from wsgicliquet.pipeline import Use, build_pipeline
from wsgicliquet.settings import ConfigurationError, Settings, load_settings

__all__ = ["ERRORS", "HTTPError", "Use", "build_pipeline", "ConfigurationError", "Settings", "load_settings",
           "Resource", "ShareableResource", "ResourceApp", "__version__"]

__version__ = "0.1.0"

_LAZY = {
    "Resource": "wsgicliquet.resource.resource",
    "ShareableResource": "wsgicliquet.resource.shareable",
    "ResourceApp": "wsgicliquet.resource.app",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'wsgicliquet' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
