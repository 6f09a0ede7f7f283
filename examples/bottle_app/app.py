"""A small Bottle site that gains the Cliquet protocol under ``/v1``, its own pages untouched.

Two Bottle apps, as Bottle code usually splits them: ``app`` is the site (two HTML pages and a JSON view at the
root), ``api`` holds the views served under ``/v1`` next to the resources.  The protocol is added around them::

    resources = ResourceApp([Bookmark], settings, fallback=api)   # /v1/bookmarks, else the Bottle API views
    application = build_pipeline(app, settings, versions={"/v1": resources})

- ``/``, ``/about``, ``/status.json``: the site, with Bottle's own HTML error pages;
- ``/v1/``, ``/v1/bookmarks``, ``/v1/batch``, ``/v1/__heartbeat__``: the protocol, JSON errors;
- ``/v1/scores``: a view of ``api``, reached through the resource app's fallback (``SCRIPT_NAME=/v1``,
  ``PATH_INFO=/scores``); it stores per-user scores in the same storage backend as the bookmarks, found in the
  environ with the authenticated user id.

Served by ``app.ini`` (PasteDeploy): ``python -m wsgicliquet serve --ini examples/bottle_app/app.ini``.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Dict, Iterable, Mapping, Optional

from bottle import Bottle, HTTPResponse, request, template

from wsgicliquet.environ import CHALLENGES, PRINCIPALS, SETTINGS, STORAGE, USERID, VIEW
from wsgicliquet.errors import HTTPError, invalid, unauthorized_or_forbidden
from wsgicliquet.pipeline import build_pipeline
from wsgicliquet.resource import Resource, ResourceApp
from wsgicliquet.resource.body import parse_json, read_body
from wsgicliquet.resource.schema import URL
from wsgicliquet.settings import SETTINGS as KNOWN_SETTINGS, load_settings
from wsgicliquet.storage import Sort

WSGIApp = Callable[[Dict[str, Any], Callable[..., Any]], Iterable[bytes]]
MAX_BODY = KNOWN_SETTINGS["storage_max_request_size"].default
"""Largest body of the views when the settings do not say (``storage_max_request_size``'s default)."""

app = Bottle()
api = Bottle()
"""Views served below the version prefix only, next to the resources."""
# Exceptions of the api views are not turned into Bottle's HTML 500 but reach the JSON error layer, which answers a
# storage failure with the protocol's 503 errno 201 (any other exception with its 500), logs and reports it.
api.config["catchall"] = False

PAGE = """<!doctype html>
<html><head><title>{{title}}</title></head>
<body><h1>{{title}}</h1><p>{{text}}</p><p><a href="/">Home</a> <a href="/about">About</a></p></body></html>
"""


@app.get("/")
def index() -> str:
    return template(PAGE, title="Library", text="Read, then keep your scores and bookmarks in the API.")


@app.get("/about")
def about() -> str:
    return template(PAGE, title="About", text="A reading site with a Cliquet API under /v1.")


@app.get("/status.json")
def status() -> Dict[str, Any]:
    return {"site": "library", "games": ["quiz", "crossword"]}  # Bottle serves a dict as JSON


class Bookmark(Resource):
    """The classic Cliquet resource: ``url`` is required and an absolute URI (whitespace stripped), any other field
    is kept."""

    schema = {"type": "object", "properties": {"url": URL}, "required": ["url"]}
    preserve_unknown = True


def _json(body: Any, status: int = 200, headers: Iterable[Any] = ()) -> HTTPResponse:
    return HTTPResponse(json.dumps(body), status, {"Content-Type": "application/json", **dict(headers)})


def _error(error: HTTPError) -> HTTPResponse:
    return _json(error.to_dict(), error.code, error.headers)


@api.route("/scores", method=["GET", "POST"])
def scores() -> HTTPResponse:
    """``POST {"game": "quiz", "score": 12}`` records a score of the user; ``GET`` lists them, best first."""
    environ = request.environ
    environ[VIEW] = "scores"
    userid = environ.get(USERID)
    if userid is None:
        return _error(unauthorized_or_forbidden(environ.get(PRINCIPALS, ()), environ.get(CHALLENGES)))
    storage = environ[STORAGE]
    if request.method in ("GET", "HEAD"):  # frameworks send HEAD to the GET view
        records, _total = storage.get_all("score", userid, sorting=[Sort("score", -1)])
        return _json({"data": records})
    try:  # the resources' limit: Bottle spools any body whole (to disk beyond MEMFILE_MAX), then reads it
        raw = read_body(environ, (environ.get(SETTINGS) or {}).get("storage_max_request_size", MAX_BODY))
    except HTTPError as error:  # 413 beyond the limit (nothing read when Content-Length says so), 400 bad length
        return _error(error)
    try:  # the resources' strict parser: Bottle's request.json lets a too deep body through as a 500
        body = parse_json(raw) if request.content_type.startswith("application/json") else None
    except HTTPError:  # not JSON, too deep, NUL or lone surrogate (PostgreSQL cannot store them), beyond 64 bits
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("game"), str) \
            or not isinstance(body.get("score"), int) or isinstance(body.get("score"), bool):
        return _error(invalid("body", "score", "Expected {\"game\": string, \"score\": integer}"))
    record = storage.create("score", userid, {"game": body["game"], "score": body["score"]})
    return _json({"data": record}, 201)


def make_app(settings: Optional[Mapping[str, Any]] = None) -> WSGIApp:
    """The site wrapped by the pipeline, with the resources (falling back to ``api``) mounted at ``/v1``."""
    settings = load_settings(settings or {})
    return build_pipeline(app, settings, versions={"/v1": ResourceApp([Bookmark], settings, fallback=api)})


def app_factory(global_conf: Mapping[str, Any], **local_conf: Any) -> WSGIApp:
    """PasteDeploy: the whole service from the ini's settings (``use = call:examples.bottle_app.app:app_factory``)."""
    return make_app({**global_conf, **local_conf})


if __name__ == "__main__":
    from bottle import run

    run(make_app(), host="127.0.0.1", port=8888)
