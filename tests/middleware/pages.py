"""The application behind the heartbeat and hello tests, bare WSGI, Flask or Bottle: it serves ``GET /page``, so
the tests can see a middleware let the framework's own pages through."""
from __future__ import annotations

from typing import Any, Callable, Dict, List

import bottle
import flask
import pytest


def bare_app(environ: Dict[str, Any], start_response: Callable) -> List[bytes]:
    if environ["PATH_INFO"] != "/page":
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
        return [b"not found"]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
    return [b"page"]


def flask_app() -> flask.Flask:
    app = flask.Flask(__name__)
    app.add_url_rule("/page", "page", lambda: "page")
    app.add_url_rule("/", "home", lambda: "home page")  # hidden by the hello view
    return app


def bottle_app() -> bottle.Bottle:
    app = bottle.Bottle()
    app.route("/page", "GET", lambda: "page")
    app.route("/", "GET", lambda: "home page")
    return app


#: The params of an ``inner`` fixture: each test runs on the three kinds of application.
FRAMEWORKS = [pytest.param(lambda: bare_app, id="bare"), pytest.param(flask_app, id="flask"),
              pytest.param(bottle_app, id="bottle")]
