"""``Backoff`` on every response of a version, the 410 of its end of service included (PROTOCOL.md §9.1, §10)."""
import datetime

import pytest
import webtest

from wsgicliquet import Resource, ResourceApp, build_pipeline
from wsgicliquet.backends import clear_backends


class Bookmark(Resource):
    schema = {"type": "object", "properties": {"url": {"type": "string"}}}


SETTINGS = {"project_name": "myapp", "project_version": "1.4.2", "userid_hmac_secret": "abc", "backoff": "10"}


@pytest.fixture
def clean():
    clear_backends()
    yield
    clear_backends()


@pytest.mark.parametrize("path", ["/v1/", "/v1/bookmarks", "/v1/__heartbeat__", "/__heartbeat__"])
def test_hard_end_of_life_answers_carry_backoff(clean, path):
    settings = dict(SETTINGS, eos="2000-01-01")
    api = webtest.TestApp(build_pipeline(ResourceApp([Bookmark], settings), settings))
    gone = api.get(path, status=410)
    assert gone.json["errno"] == 202
    assert gone.headers["Backoff"] == "10"
    assert '"hard-eol"' in gone.headers["Alert"]


def test_soft_end_of_life_answers_carry_backoff_and_alert(clean):
    eos = (datetime.date.today() + datetime.timedelta(days=30)).isoformat()
    settings = dict(SETTINGS, eos=eos)
    api = webtest.TestApp(build_pipeline(ResourceApp([Bookmark], settings), settings))
    response = api.get("/v1/bookmarks", status=401)
    assert response.headers["Backoff"] == "10"
    assert '"soft-eol"' in response.headers["Alert"]
