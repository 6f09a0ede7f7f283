"""A small Flask site that gains the Cliquet protocol under ``/v1``, its own pages untouched.

The site (``app``) is an ordinary Flask app: two HTML pages and a JSON view at the root.  The API is added
around its ``wsgi_app``::

    site = app.wsgi_app
    api = ResourceApp([Bookmark], settings, fallback=site)   # /v1/bookmarks, else the Flask views
    app.wsgi_app = build_pipeline(site, settings, versions={"/v1": api})

- ``/``, ``/about``, ``/status.json``: the site, with Flask's own HTML error pages;
- ``/v1/``, ``/v1/bookmarks``, ``/v1/batch``, ``/v1/__heartbeat__``: the protocol, JSON errors;
- ``/v1/scores``: a Flask view of the ``api`` blueprint, reached through the resource app's fallback
  (``SCRIPT_NAME=/v1``, ``PATH_INFO=/scores``); it stores per-user scores in the same storage backend as the
  bookmarks, found in the environ with the authenticated user id.

Served by ``app.ini`` (PasteDeploy): ``python -m wsgicliquet serve --ini examples/flask_app/app.ini``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Mapping, Optional

from flask import Blueprint, Flask, abort, jsonify, render_template_string, request
from werkzeug.exceptions import MethodNotAllowed

from wsgicliquet.environ import API_PREFIX, CHALLENGES, PRINCIPALS, SETTINGS, STORAGE, USERID, VIEW
from wsgicliquet.errors import HTTPError, backend_unavailable, invalid, unauthorized_or_forbidden
from wsgicliquet.pipeline import build_pipeline
from wsgicliquet.resource import Resource, ResourceApp
from wsgicliquet.resource.body import parse_json, read_body
from wsgicliquet.resource.schema import URL
from wsgicliquet.settings import SETTINGS as KNOWN_SETTINGS, load_settings
from wsgicliquet.storage import BackendError, Sort

WSGIApp = Callable[[Dict[str, Any], Callable[..., Any]], Iterable[bytes]]
MAX_BODY = KNOWN_SETTINGS["storage_max_request_size"].default
"""Largest body of the views when the settings do not say (``storage_max_request_size``'s default)."""

app = Flask(__name__)
api = Blueprint("api", __name__)
"""Views served below the version prefix only, next to the resources."""

PAGE = """<!doctype html>
<html><head><title>{{ title }}</title></head>
<body><h1>{{ title }}</h1><p>{{ text }}</p>
<p><a href="{{ url_for('index') }}">Home</a> <a href="{{ url_for('about') }}">About</a></p></body></html>
"""


@app.get("/")
def index() -> str:
    return render_template_string(PAGE, title="Arcade", text="Play, then keep your scores and bookmarks in the API.")


@app.get("/about")
def about() -> str:
    return render_template_string(PAGE, title="About", text="An arcade site with a Cliquet API under /v1.")


@app.get("/status.json")
def status() -> Any:
    return jsonify(site="arcade", games=["tetris", "pacman"])


class Bookmark(Resource):
    """The classic Cliquet resource: ``url`` is required and an absolute URI (whitespace stripped), any other field
    is kept."""

    schema = {"type": "object", "properties": {"url": URL}, "required": ["url"]}
    preserve_unknown = True


@api.route("/scores", methods=["GET", "POST"])
def scores() -> Any:
    """``POST {"game": "tetris", "score": 1200}`` records a score of the user; ``GET`` lists them, best first."""
    environ = request.environ
    environ[VIEW] = "scores"
    userid = environ.get(USERID)
    if userid is None:
        # An HTTPError is a WSGI response; the challenges are those of the configured authentication policies.
        return unauthorized_or_forbidden(environ.get(PRINCIPALS, ()), environ.get(CHALLENGES))
    storage = environ[STORAGE]
    if request.method in ("GET", "HEAD"):  # frameworks send HEAD to the GET view
        records, _total = storage.get_all("score", userid, sorting=[Sort("score", -1)])
        return jsonify(data=records)
    try:  # the resources' limit: Flask reads any body whole, a 2 GB upload included
        raw = read_body(environ, (environ.get(SETTINGS) or {}).get("storage_max_request_size", MAX_BODY))
    except HTTPError as error:  # 413 beyond the limit (nothing read when Content-Length says so), 400 bad length
        return error
    try:  # the resources' strict parser: Flask's get_json(silent=True) lets a too deep body through as a 500
        body = parse_json(raw) if request.is_json else None
    except HTTPError:  # not JSON, too deep, NUL or lone surrogate (PostgreSQL cannot store them), beyond 64 bits
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("game"), str) \
            or not isinstance(body.get("score"), int) or isinstance(body.get("score"), bool):
        return invalid("body", "score", "Expected {\"game\": string, \"score\": integer}")
    record = storage.create("score", userid, {"game": body["game"], "score": body["score"]})
    return jsonify(data=record), 201


@api.errorhandler(BackendError)
def backend_failure(error: BackendError) -> Any:
    """A storage failure in an ``api`` view is the protocol's 503 errno 201, logged and reported to Sentry as the
    resource app's are; Flask would answer its own 500."""
    settings = request.environ.get(SETTINGS) or {}
    return backend_unavailable(error, request.environ, settings.get("retry_after_seconds"))


app.register_blueprint(api)


@app.before_request
def api_views_under_the_api_only() -> None:
    """Keep the pages at the root and the ``api`` views under ``/v1`` (both reach this app)."""
    if (_blueprint() == "api") != (API_PREFIX in request.environ):
        abort(404)


def _blueprint() -> Optional[str]:
    """The blueprint of the requested view; on a method the view refuses (405), the blueprint of the path's view,
    found by matching the path again with a method it accepts."""
    error = request.routing_exception
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        endpoint, _ = app.create_url_adapter(request).match(method=sorted(error.valid_methods)[0])  # type: ignore
        return endpoint.rpartition(".")[0] or None
    return request.blueprint


def make_app(settings: Optional[Mapping[str, Any]] = None) -> WSGIApp:
    """The site's ``wsgi_app`` wrapped by the pipeline, with the resources mounted at ``/v1``.

    Returned rather than assigned to ``app.wsgi_app``, so that calling it twice (tests) never wraps twice; in your
    own app, ``app.wsgi_app = make_app(settings)`` is Flask's usual way to add WSGI middleware.
    """
    settings = load_settings(settings or {})
    site = app.wsgi_app
    return build_pipeline(site, settings, versions={"/v1": ResourceApp([Bookmark], settings, fallback=site)})


def app_factory(global_conf: Mapping[str, Any], **local_conf: Any) -> WSGIApp:
    """PasteDeploy: the whole service from the ini's settings (``use = call:examples.flask_app.app:app_factory``)."""
    return make_app({**global_conf, **local_conf})


if __name__ == "__main__":
    app.wsgi_app = make_app()  # type: ignore[method-assign]
    app.run(port=8888)
