"""A small Pyramid site that gains the Cliquet protocol under ``/v1``, its own pages untouched.

The site is an ordinary Pyramid app (``make_site()``: two HTML pages and a JSON view at the root).  The protocol
is added around the WSGI app Pyramid makes::

    site = make_site()
    resources = ResourceApp([Bookmark], settings, fallback=site)   # /v1/bookmarks, else the Pyramid views
    application = build_pipeline(site, settings, versions={"/v1": resources})

- ``/``, ``/about``, ``/status.json``: the site, with Pyramid's own error pages;
- ``/v1/``, ``/v1/bookmarks``, ``/v1/batch``, ``/v1/__heartbeat__``: the protocol, JSON errors;
- ``/v1/scores``: a Pyramid view reached through the resource app's fallback (``SCRIPT_NAME=/v1``,
  ``PATH_INFO=/scores``); the route predicate ``under_api`` keeps it there and the pages at the root.  It stores
  per-user scores in the same storage backend as the bookmarks, found in the environ with the authenticated user.

Served by ``app.ini`` (PasteDeploy): ``python -m wsgicliquet serve --ini examples/pyramid_app/app.ini``.
"""
from __future__ import annotations

from html import escape
from typing import Any, Callable, Dict, Iterable, Mapping, Optional

from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPMethodNotAllowed
from pyramid.request import Request
from pyramid.response import Response

from wsgicliquet.environ import API_PREFIX, CHALLENGES, PRINCIPALS, SETTINGS, STORAGE, USERID, VIEW
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

PAGE = """<!doctype html>
<html><head><title>{title}</title></head>
<body><h1>{title}</h1><p>{text}</p><p><a href="/">Home</a> <a href="/about">About</a></p></body></html>
"""


def index(request: Request) -> Response:
    return Response(PAGE.format(title="Chess club", text=escape("Play, then keep your scores and bookmarks.")))


def about(request: Request) -> Response:
    return Response(PAGE.format(title="About", text=escape("A chess club site with a Cliquet API under /v1.")))


def status(request: Request) -> Dict[str, Any]:
    return {"site": "chess club", "games": ["blitz", "rapid"]}


class Bookmark(Resource):
    """The classic Cliquet resource: ``url`` is required and an absolute URI (whitespace stripped), any other field
    is kept."""

    schema = {"type": "object", "properties": {"url": URL}, "required": ["url"]}
    preserve_unknown = True


def _error(error: HTTPError) -> Response:
    return Response(json_body=error.to_dict(), status=error.code, headerlist=[
        ("Content-Type", "application/json"), *error.headers])


def scores(request: Request) -> Response:
    """``POST {"game": "blitz", "score": 1500}`` records a score of the user; ``GET`` lists them, best first."""
    environ = request.environ
    environ[VIEW] = "scores"
    userid = environ.get(USERID)
    if userid is None:
        return _error(unauthorized_or_forbidden(environ.get(PRINCIPALS, ()), environ.get(CHALLENGES)))
    storage = environ[STORAGE]
    if request.method in ("GET", "HEAD"):  # frameworks send HEAD to the GET view
        records, _total = storage.get_all("score", userid, sorting=[Sort("score", -1)])
        return Response(json_body={"data": records})
    try:  # the resources' limit: request.body reads any body whole, a 2 GB upload included
        raw = read_body(environ, (environ.get(SETTINGS) or {}).get("storage_max_request_size", MAX_BODY))
    except HTTPError as error:  # 413 beyond the limit (nothing read when Content-Length says so), 400 bad length
        return _error(error)
    try:  # the resources' strict parser: request.json_body lets a too deep body through as a 500
        body = parse_json(raw)
    except HTTPError:  # not JSON, too deep, NUL or lone surrogate (PostgreSQL cannot store them), beyond 64 bits
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("game"), str) \
            or not isinstance(body.get("score"), int) or isinstance(body.get("score"), bool):
        return _error(invalid("body", "score", "Expected {\"game\": string, \"score\": integer}"))
    record = storage.create("score", userid, {"game": body["game"], "score": body["score"]})
    return Response(json_body={"data": record}, status=201)


def scores_refused(request: Request) -> Response:
    """Other methods: 405 (a view predicate that does not match is a 404 in Pyramid)."""
    return HTTPMethodNotAllowed(headers=[("Allow", "GET, HEAD, POST")])


class UnderApi:
    """Route predicate ``under_api``: True routes match only below the version prefix, False only outside it."""

    def __init__(self, value: bool, config: Any) -> None:
        self.value = bool(value)

    def text(self) -> str:
        return f"under_api = {self.value}"

    phash = text

    def __call__(self, info: Any, request: Request) -> bool:
        return (API_PREFIX in request.environ) == self.value


def make_site() -> WSGIApp:
    """The Pyramid site as it was, plus the API views (``under_api=True``)."""
    with Configurator() as config:
        config.add_route_predicate("under_api", UnderApi)
        config.add_route("index", "/", under_api=False)
        config.add_route("about", "/about", under_api=False)
        config.add_route("status", "/status.json", under_api=False)
        config.add_route("scores", "/scores", under_api=True)
        config.add_view(index, route_name="index")
        config.add_view(about, route_name="about")
        config.add_view(status, route_name="status", renderer="json")
        config.add_view(scores, route_name="scores", request_method=("GET", "POST"))
        config.add_view(scores_refused, route_name="scores")
        return config.make_wsgi_app()


app = make_site()
"""The site, for ``egg:wsgicliquet#wsgi`` in the ini (and as the fallback of the resources under ``/v1``)."""


def make_app(settings: Optional[Mapping[str, Any]] = None) -> WSGIApp:
    """The site wrapped by the pipeline, with the resources (falling back to the site) mounted at ``/v1``."""
    settings = load_settings(settings or {})
    site = make_site()
    return build_pipeline(site, settings, versions={"/v1": ResourceApp([Bookmark], settings, fallback=site)})


def app_factory(global_conf: Mapping[str, Any], **local_conf: Any) -> WSGIApp:
    """PasteDeploy: the whole service from the ini's settings (``use = call:examples.pyramid_app.app:app_factory``)."""
    return make_app({**global_conf, **local_conf})


if __name__ == "__main__":
    from wsgiref.simple_server import make_server

    make_server("127.0.0.1", 8888, make_app()).serve_forever()
