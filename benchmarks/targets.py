"""The WSGI apps the benchmark harness serves with gunicorn (``benchmarks.targets:<name>``).

* ``bare``: a constant JSON body, nothing else: the ceiling of the server and the machine.
* ``api``: the resource app (one resource, :class:`Task`) inside the full canonical pipeline of
  :func:`wsgicliquet.pipeline.build_pipeline`: request log, StatsD, CORS, JSON errors, version prefix, end of
  life, backoff, heartbeat, transaction, batch, authentication, read-only, hello, backends.
* ``flask_full``: a small Flask app behind the same pipeline (served under ``/v1``); ``flask_bare``: the same
  Flask app alone.  The pair measures what the pipeline adds to a pass-through request.

Every layer does its real work: requests carry Basic Auth and ``Origin``, the request log renders each event (to
``os.devnull``), StatsD sends to a UDP port nobody listens on, ``backoff`` and an end of service date are set.

Configuration comes from the environment, so that gunicorn workers need nothing else:
``WSGICLIQUET_STORAGE_URL`` (the settings layer reads it; ``memory://`` by default), ``WSGICLIQUET_STATSD_URL``,
``BENCHMARK_RECORDS`` (records seeded at start-up when the storage is in memory, default 10,000) and
``BENCHMARK_READY_DIR`` (each worker creates a file named after its pid there once its app is ready).
Apps are built on first access, one per process, so importing this module is cheap.
"""
from __future__ import annotations

import base64
import logging
import os
import socket
import uuid
from typing import Any, Callable, Dict, Iterable, List

from wsgicliquet.backends import load_backend
from wsgicliquet.middleware.auth import BasicAuth
from wsgicliquet.pipeline import build_pipeline
from wsgicliquet.resource.app import ResourceApp
from wsgicliquet.resource.resource import Resource
from wsgicliquet.settings import Settings, load_settings
from wsgicliquet.storage import Storage

__all__ = ["Task", "TARGETS", "build", "configure_logging", "settings", "credentials", "user_id", "record_id",
           "seed", "SEED_BASE_MS", "PATCH_RECORDS", "READER", "WRITER", "PATCHER"]

WSGIApp = Callable[[Dict[str, Any], Callable[..., Any]], Iterable[bytes]]

#: ``last_modified`` of the first seeded record; record ``i`` gets ``SEED_BASE_MS + i``.
SEED_BASE_MS = 1_700_000_000_000
#: Records of the PATCH workload: one per client connection (more than any sensible concurrency).
PATCH_RECORDS = 64
#: Users (Basic Auth ``user:password``), one partition each: reads never see the records the writes add.
READER, WRITER, PATCHER = "reader:secret", "writer:secret", "patcher:secret"
HMAC_SECRET = "benchmark-secret"
ORIGIN = "http://client.example"


class Task(Resource):
    """The benchmarked resource: a few typed fields, no unique field (a create is one plain write)."""

    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 200},
            "position": {"type": "integer"},
            "done": {"type": "boolean", "default": False},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["title"],
    }


#: Storage namespace of the Task records (the resource's default collection id).
COLLECTION = "task"


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def settings() -> Settings:
    """The settings of every pipeline target; the environment overrides them (``WSGICLIQUET_*``)."""
    return load_settings({
        "project_name": "bench",
        "project_version": "1.0.0",
        "userid_hmac_secret": HMAC_SECRET,
        "statsd_url": os.environ.get("WSGICLIQUET_STATSD_URL") or f"udp://127.0.0.1:{_free_udp_port()}",
        "backoff": 10,
        "eos": "2099-12-31",
        "eos_message": "Benchmark: this version is deprecated",
        "logging_renderer": "json",
        "cors_origins": ["*"],
    })


def credentials(user: str) -> str:
    """The ``Authorization`` header of ``user`` (``name:password``)."""
    return "Basic " + base64.b64encode(user.encode("utf-8")).decode("ascii")


def user_id(user: str) -> str:
    """The partition (``parent_id``) of ``user``: the prefixed Basic Auth id of the authentication middleware."""
    return "basicauth:" + str(BasicAuth(HMAC_SECRET)({"HTTP_AUTHORIZATION": credentials(user)}))


def record_id(index: int, salt: int = 0) -> str:
    """A deterministic UUID4-shaped id, the same in every process."""
    return str(uuid.UUID(int=(salt << 64) + index + 1, version=4))


def seed_record(index: int) -> Dict[str, Any]:
    return {"id": record_id(index), "last_modified": SEED_BASE_MS + index,
            "title": f"Task number {index}", "position": (index * 7919) % 10_000, "done": index % 2 == 0,
            "tags": ["bench", f"group-{index % 10}"]}


def seed(storage: Storage, records: int) -> None:
    """``records`` tasks for the reader and :data:`PATCH_RECORDS` for the patcher, with fixed ids and timestamps.

    Identical in every process, so that each gunicorn worker of a memory target holds the same data.
    """
    reader = user_id(READER)
    for start in range(0, records, 100):
        # One transaction per 100 records: every write of a partition updates its counter row, and PostgreSQL
        # slows down on a row updated thousands of times in one transaction.
        with storage.transaction():
            for index in range(start, min(start + 100, records)):
                storage.create(COLLECTION, reader, seed_record(index))
    patcher = user_id(PATCHER)
    with storage.transaction():
        for index in range(PATCH_RECORDS):
            storage.create(COLLECTION, patcher, {"id": record_id(index, salt=1), "title": "patched", "position": 0})


def configure_logging() -> None:
    """Request log events are rendered and written, as in production, but to ``os.devnull``."""
    logger = logging.getLogger("request.summary")
    if not logger.handlers:
        handler = logging.FileHandler(os.devnull)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _ready() -> None:
    directory = os.environ.get("BENCHMARK_READY_DIR")
    if directory:
        with open(os.path.join(directory, str(os.getpid())), "w"):
            pass


_BARE_BODY = b'{"hello":"world","items":[1,2,3]}'
_BARE_HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(_BARE_BODY)))]


def _bare(environ: Dict[str, Any], start_response: Callable[..., Any]) -> List[bytes]:
    """The ceiling: a constant JSON answer to every request."""
    start_response("200 OK", list(_BARE_HEADERS))
    return [_BARE_BODY]


def _api() -> WSGIApp:
    config = settings()
    storage = load_backend("storage", config)
    if config["storage_url"].startswith("memory") and not storage.collection_timestamp(COLLECTION, user_id(PATCHER)):
        seed(storage, int(os.environ.get("BENCHMARK_RECORDS", "10000")))  # once per process
    return build_pipeline(ResourceApp([Task], config, storage=storage), config)


def _flask_app() -> Any:
    from flask import Flask, jsonify

    app = Flask("benchmark")

    @app.get("/scores")
    def scores() -> Any:
        return jsonify(scores=[{"player": f"player-{n}", "score": n * 10} for n in range(10)])

    return app


def _flask_full() -> WSGIApp:
    return build_pipeline(_flask_app(), settings())


_BUILDERS: Dict[str, Callable[[], WSGIApp]] = {
    "bare": lambda: _bare, "api": _api, "flask_full": _flask_full, "flask_bare": _flask_app,
}
_built: Dict[str, WSGIApp] = {}


def build(name: str) -> WSGIApp:
    """A new app ``name`` (one of :data:`TARGETS`); the memory storage of a process is seeded once."""
    return _BUILDERS[name]()


def __getattr__(name: str) -> WSGIApp:
    # gunicorn reads ``benchmarks.targets:api`` with getattr(): the app is built then, in the worker.
    if name not in _BUILDERS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _built:
        configure_logging()
        _built[name] = build(name)
        _ready()
    return _built[name]


#: The names gunicorn can serve.
TARGETS = tuple(_BUILDERS)
