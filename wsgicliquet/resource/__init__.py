"""The resource app: the Cliquet record protocol for the resources an application declares.

Declare a :class:`Resource` subclass (private per user) or a :class:`ShareableResource` subclass (records shared
through per-record permissions) with a JSON schema, hand it to :class:`ResourceApp`, mount the app under
``/v1``.  The modules are small on purpose: ``querystring`` (listing parameters), ``preconditions``
(``If-Match``/``If-None-Match``), ``pagination`` (keyset tokens), ``schema`` (record validation), ``generators``
(record ids), ``body`` (request and response JSON), ``handlers`` (one function per verb) and ``app`` (routing).
"""
from __future__ import annotations

from typing import Any

__all__ = ["Resource", "ShareableResource", "ResourceApp", "app_factory"]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing a pure helper module (querystring...) does not build the whole app machinery.
    if name == "Resource":
        from wsgicliquet.resource.resource import Resource

        return Resource
    if name == "ShareableResource":
        from wsgicliquet.resource.shareable import ShareableResource

        return ShareableResource
    if name in ("ResourceApp", "app_factory"):
        from wsgicliquet.resource import app

        return getattr(app, name)
    raise AttributeError(f"module 'wsgicliquet.resource' has no attribute {name!r}")
