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


@pytest.mark.parametrize("path", ["/", "/v1", "/bookmarks?_limit=2"])
def test_redirects_into_a_retired_version_are_its_410(clean, path):
    """§10: after the end of service every URL is a 410, the version prefix's redirects to it included."""
    settings = dict(SETTINGS, eos="2000-01-01")
    api = webtest.TestApp(build_pipeline(ResourceApp([Bookmark], settings), settings))
    gone = api.get(path, status=410)
    assert gone.json["errno"] == 202 and gone.headers["Backoff"] == "10"
    assert '"hard-eol"' in gone.headers["Alert"]


@pytest.mark.parametrize("path, location", [("/", "http://localhost/v1/"), ("/v1", "http://localhost/v1/"),
                                            ("/bookmarks?_limit=2", "http://localhost/v1/bookmarks?_limit=2")])
def test_redirects_into_a_version_carry_its_backoff_and_alert(clean, path, location):
    """§9.1: ``Backoff`` on every response, the 307s into the version included (and its soft-eol ``Alert``)."""
    eos = (datetime.date.today() + datetime.timedelta(days=30)).isoformat()
    settings = dict(SETTINGS, eos=eos)
    api = webtest.TestApp(build_pipeline(ResourceApp([Bookmark], settings), settings))
    redirect = api.get(path, status=307)
    assert redirect.headers["Location"] == location
    assert redirect.headers["Backoff"] == "10"
    assert '"soft-eol"' in redirect.headers["Alert"] and "Sunset" in redirect.headers


def test_each_version_redirect_carries_its_own_end_of_life(clean):
    """``/v1`` (retired) is gone, its redirect included; unprefixed URLs go to the current ``/v2`` without alert."""
    settings = dict(SETTINGS, project_version="2.0.0")
    app = build_pipeline(None, settings, versions={"/v1": (ResourceApp([Bookmark], settings), {"eos": "2000-01-01"}),
                                                   "/v2": ResourceApp([Bookmark], settings)})
    api = webtest.TestApp(app)
    assert api.get("/v1", status=410).json["errno"] == 202
    current = api.get("/bookmarks", status=307)
    assert current.headers["Location"] == "http://localhost/v2/bookmarks"
    assert current.headers["Backoff"] == "10" and "Alert" not in current.headers


def test_a_version_not_served_is_a_404_with_backoff(clean):
    """§3.1, §9.1: ``Backoff`` on every response, the 404 errno 116 of ``/v2`` included (through the current
    version's layers, with its soft-eol ``Alert``)."""
    eos = (datetime.date.today() + datetime.timedelta(days=30)).isoformat()
    settings = dict(SETTINGS, eos=eos)
    api = webtest.TestApp(build_pipeline(ResourceApp([Bookmark], settings), settings))
    missing = api.get("/v2/bookmarks", status=404)
    assert missing.json["errno"] == 116
    assert missing.headers["Backoff"] == "10" and '"soft-eol"' in missing.headers["Alert"]


def test_a_version_not_served_beside_a_retired_one_is_a_404_of_the_current(clean):
    settings = dict(SETTINGS, project_version="2.0.0")
    app = build_pipeline(None, settings, versions={"/v1": (ResourceApp([Bookmark], settings), {"eos": "2000-01-01"}),
                                                   "/v2": ResourceApp([Bookmark], settings)})
    missing = webtest.TestApp(app).get("/v3/bookmarks", status=404)
    assert missing.json["errno"] == 116 and missing.headers["Backoff"] == "10" and "Alert" not in missing.headers
