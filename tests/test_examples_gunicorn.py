"""Each example in production shape: ``gunicorn --paste examples/<name>/app.ini`` with two workers on PostgreSQL.

The backends are moved to PostgreSQL by the environment (``WSGICLIQUET_STORAGE_URL`` and the cache and permission
URLs), the schema is created by ``wsgicliquet migrate``, and a client does a create, list, sync round trip over
real HTTP.  Two workers share nothing but the database, so the round trip also shows the state lives there.
"""
from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from wsgicliquet.__main__ import main
from wsgicliquet.backends import load_backend
from wsgicliquet.settings import load_settings

from tests.test_examples import OVERRIDE_PREFIXES, private_postgresql_url

pytestmark = [pytest.mark.postgresql, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("storage", "cache", "permission")


def _gunicorn_command(ini: str, port: int) -> List[str]:
    command = [sys.executable, "-m", "gunicorn", "--paste", ini, "--workers", "2", "--bind", f"127.0.0.1:{port}",
               "--graceful-timeout", "5"]
    from gunicorn.config import KNOWN_SETTINGS

    if any(setting.name == "control_socket_disable" for setting in KNOWN_SETTINGS):
        command.append("--no-control-socket")  # else every gunicorn of the user shares one socket path
    return command


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Client:
    """A tiny urllib client speaking JSON with Basic Auth."""

    def __init__(self, base: str, user: str) -> None:
        self.base = base
        self.auth = "Basic " + base64.b64encode(f"{user}:secret".encode()).decode()

    def request(self, method: str, path: str, body: Any = None) -> Tuple[int, Dict[str, str], Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Authorization": self.auth, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), json.loads(response.read())
        except urllib.error.HTTPError as error:
            with error:
                return error.code, dict(error.headers), json.loads(error.read())


def _wait_until_serving(base: str, process: subprocess.Popen, log: Path, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(base + "/__lbheartbeat__", timeout=1).close()
            return
        except OSError:  # refused, reset, or timed out while the workers boot
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"gunicorn did not start:\n{log.read_text()}")
            time.sleep(0.1)


@pytest.fixture
def postgresql_environment(postgresql_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Dict[str, str]]:
    """The process environment of a production run: every backend on PostgreSQL, schema migrated, flushed after."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith(OVERRIDE_PREFIXES)}
    url = private_postgresql_url(postgresql_url)
    for kind in BACKENDS:
        environment[f"WSGICLIQUET_{kind.upper()}_URL"] = url
    for key in list(os.environ):
        if key.startswith(OVERRIDE_PREFIXES):
            monkeypatch.delenv(key)
    for key, value in environment.items():
        if key.startswith("WSGICLIQUET_"):
            monkeypatch.setenv(key, value)
    assert main(["migrate", "--ini", str(ROOT / "examples/flask_app/app.ini")]) == 0
    yield environment
    settings = load_settings({})
    for kind in BACKENDS:
        load_backend(kind, settings).flush()


@pytest.fixture
def gunicorn(postgresql_environment: Dict[str, str]) -> Iterator[Any]:
    """Start ``gunicorn --paste <ini> --workers 2`` on a free port; stop it with SIGTERM and check it exits cleanly."""
    started = []

    def start(ini: str) -> str:
        port = _free_port()
        log = Path(tempfile.mkstemp(prefix="gunicorn-", suffix=".log")[1])
        with log.open("wb") as output:
            process = subprocess.Popen(_gunicorn_command(ini, port), cwd=ROOT, env=postgresql_environment, stdout=output, stderr=subprocess.STDOUT)
        started.append((process, log))
        base = f"http://127.0.0.1:{port}"
        _wait_until_serving(base, process, log)
        return base

    yield start
    for process, log in started:
        process.send_signal(signal.SIGTERM)
        try:
            code: Optional[int] = process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        output = log.read_text()
        log.unlink()
        assert code == 0, output
        assert "Traceback" not in output, output


@pytest.mark.parametrize("ini", [pytest.param("examples/flask_app/app.ini", id="flask"),
                                 pytest.param("examples/bottle_app/app.ini", id="bottle"),
                                 pytest.param("examples/pyramid_app/app.ini", id="pyramid")])
def test_create_list_sync_over_http(gunicorn, ini):
    client = Client(gunicorn(ini), f"player-{uuid.uuid4().hex[:8]}")

    status, _headers, hello = client.request("GET", "/v1/")
    assert status == 200 and hello["user"]["id"].startswith("basicauth:")
    status, _headers, heartbeat = client.request("GET", "/__heartbeat__")
    assert (status, heartbeat) == (200, {"storage": True, "cache": True, "permission": True})

    status, _headers, first = client.request("POST", "/v1/bookmarks", {"data": {"url": "https://example.com/1"}})
    assert status == 201
    status, headers, listing = client.request("GET", "/v1/bookmarks")
    assert status == 200
    assert [record["id"] for record in listing["data"]] == [first["data"]["id"]]
    since = headers["ETag"].strip('"')

    status, _headers, second = client.request("POST", "/v1/bookmarks", {"data": {"url": "https://example.com/2"}})
    assert status == 201
    status, _headers, deleted = client.request("DELETE", f"/v1/bookmarks/{first['data']['id']}")
    assert status == 200
    status, _headers, changes = client.request("GET", f"/v1/bookmarks?_since={since}&_sort=last_modified")
    assert status == 200
    assert [(record["id"], record.get("deleted", False)) for record in changes["data"]] == [
        (second["data"]["id"], False), (first["data"]["id"], True)]
    assert changes["data"][-1]["last_modified"] == deleted["data"]["last_modified"]

    status, _headers, _score = client.request("POST", "/v1/scores", {"game": "g", "score": 5})
    assert status == 201
    status, _headers, scores = client.request("GET", "/v1/scores")
    assert [record["score"] for record in scores["data"]] == [5]
