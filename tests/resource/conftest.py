"""Fixtures of the resource app tests: sample resources, a WebTest app per test, users set in the environ.

The authentication middleware is not used: :func:`as_user` puts the user id and principals in the environ the way
it would (``extra_environ``), so these tests depend on the resource app only.
"""
from __future__ import annotations

import os
import uuid
from typing import Any, Dict, Mapping, Optional, Tuple

import pytest
import webtest

from tests.backends import database_url
from wsgicliquet.backends import MODULES, import_string
from wsgicliquet.resource.app import ResourceApp
from wsgicliquet.resource.resource import Resource
from wsgicliquet.settings import load_settings
from wsgicliquet.storage.memory import Storage as MemoryStorage

ALICE = "basicauth:alice"
BOB = "basicauth:bob"
# The database of the resource tests: no other test module flushes it under their feet.
RESOURCE_DATABASE = "wsgicliquet_resource_tests"


def as_user(userid: Optional[str]) -> Dict[str, Any]:
    """The environ the authentication middleware gives a request of ``userid`` (None: anonymous)."""
    if userid is None:
        return {"wsgicliquet.principals": ["system.Everyone"]}
    return {"wsgicliquet.userid": userid,
            "wsgicliquet.principals": ["system.Everyone", "system.Authenticated", userid]}


class Bookmark(Resource):
    """The seed example of PROTOCOL.md §20."""

    schema = {
        "type": "object",
        "properties": {
            "url": {"type": "string", "format": "uri", "minLength": 1, "maxLength": 2048},
            "title": {"type": "string"},
            "favorite": {"type": "boolean", "default": False},
            "device": {"type": "string", "default": ""},
            "position": {"type": "integer"},
        },
        "required": ["url"],
    }
    readonly_fields = ("device",)
    unique_fields = ("url",)

    def process_record(self, new, old=None):
        new = super().process_record(new, old)
        if old is None:
            new["device"] = self.request.user_agent or ""
        return new


class Note(Resource):
    """Schema-less: every field kept, every field may be filtered and sorted."""

    schema = {"type": "object"}
    preserve_unknown = True


class Item(Resource):
    """Nested: each (bucket, collection) is a partition of its own."""

    collection_path = "/buckets/{bucket_id}/collections/{collection_id}/records"
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}


RESOURCES = (Bookmark, Note, Item)


@pytest.fixture
def storage():
    return MemoryStorage()


@pytest.fixture
def make_app(storage):
    """``make_app(userid=..., resources=..., fallback=..., **settings)`` -> a linted WebTest app."""

    def make(userid: Optional[str] = ALICE, resources=RESOURCES, fallback=None, backend=None,
             extra_environ: Optional[Dict[str, Any]] = None, **settings: Any) -> webtest.TestApp:
        app = ResourceApp(resources, load_settings(settings, environ={}), storage=backend or storage,
                          fallback=fallback)
        environ = {**as_user(userid), **(extra_environ or {})}
        return webtest.TestApp(app, extra_environ=environ, lint=True)

    return make


@pytest.fixture
def app(make_app):
    return make_app()


def unique_user() -> str:
    """A user of its own, so that tests sharing a real database never see each other's records."""
    return f"basicauth:{uuid.uuid4().hex}"


# The servers every backend family runs on in these tests (Redis and PostgreSQL on 127.0.0.1).
SERVERS = ["memory", pytest.param("redis", marks=pytest.mark.redis),
           pytest.param("postgresql", marks=pytest.mark.postgresql)]


@pytest.fixture(scope="session")
def _shared_backends():
    """Redis and PostgreSQL backends built once per session (tests isolate themselves by user or resource)."""
    backends: Dict[Tuple[str, str], Any] = {}
    yield backends
    for (_, server), backend in backends.items():
        if server == "redis":
            backend.flush()


def server_backend(request: pytest.FixtureRequest, family: str, settings: Mapping[str, Mapping[str, Any]]) -> Any:
    """The ``family`` backend (storage, permission) of the server ``request.param`` (one of :data:`SERVERS`).

    A new memory one per test; the Redis and PostgreSQL ones are built once per session from
    ``settings[server]`` (the URL is added: the Redis test database, or :data:`RESOURCE_DATABASE`)."""
    server = request.param
    cls = import_string(MODULES[family][server])
    if server == "memory":
        return cls()
    built = request.getfixturevalue("_shared_backends")
    if (family, server) not in built:
        if server == "redis":
            url = request.getfixturevalue("redis_url")
        else:
            url = database_url(request.getfixturevalue("postgresql_url"), RESOURCE_DATABASE)
        backend = cls.from_settings({f"{family}_url": url, **settings[server]}, prefix=family)
        if server == "postgresql":
            backend.initialize_schema()
        built[family, server] = backend
    return built[family, server]


@pytest.fixture(params=SERVERS)
def any_storage(request):
    """Each storage backend; use a :func:`unique_user` with it."""
    return server_backend(request, "storage", {
        "redis": {"storage_pool_size": 20, "storage_key_prefix": f"wsgicliquet-resource-test-{os.getpid()}:"},
        "postgresql": {"storage_pool_size": 20},
    })
