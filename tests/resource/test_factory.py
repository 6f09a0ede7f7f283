"""The resource app from a PasteDeploy ``.ini``: resources by dotted path, settings from the file."""
from __future__ import annotations

import textwrap

import pytest
import webtest
from paste.deploy import loadapp

from wsgicliquet.resource.app import ResourceApp, app_factory
from wsgicliquet.settings import ConfigurationError

from .conftest import as_user, unique_user

MODULE = '''
from wsgicliquet.resource import Resource


class Bookmark(Resource):
    schema = {"type": "object", "properties": {"url": {"type": "string", "format": "uri"}}, "required": ["url"]}


class Note(Resource):
    preserve_unknown = True


def site(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"site:" + environ["PATH_INFO"].encode()]
'''


@pytest.fixture
def ini(tmp_path, monkeypatch):
    (tmp_path / "factory_resources.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(use: str, **extra: str) -> str:
        lines = "\n".join(f"{key} = {value}" for key, value in extra.items())
        path = tmp_path / "app.ini"
        path.write_text(textwrap.dedent(f"""\
            [DEFAULT]
            paginate_by = 2

            [app:main]
            use = {use}
            resources = factory_resources:Bookmark
                        factory_resources:Note
            storage_url = memory://
            collection_bookmark_delete_enabled = false
            """) + lines + "\n")
        return f"config:{path}"

    return write


@pytest.mark.parametrize("use", ["egg:wsgicliquet#resources", "call:wsgicliquet.resource.app:app_factory"])
def test_loadapp(ini, use):
    app = loadapp(ini(use))
    assert isinstance(app, ResourceApp)
    api = webtest.TestApp(app, extra_environ=as_user(unique_user()), lint=True)
    api.post_json("/bookmarks", {"data": {"url": "notaurl"}}, status=400)
    for i in range(3):
        api.post_json("/bookmarks", {"data": {"url": f"http://{i}.org"}}, status=201)
    response = api.get("/bookmarks")
    assert len(response.json["data"]) == 2 and "Next-Page" in response.headers  # paginate_by from [DEFAULT]
    assert api.delete("/bookmarks", status=405).headers["Allow"] == "GET, HEAD, POST, OPTIONS"
    assert api.post_json("/notes", {"data": {"free": 1}}).json["data"]["free"] == 1


def test_ini_values_are_coerced(ini):
    with pytest.raises(ConfigurationError, match="last_modified_margin_ms"):
        loadapp(ini("egg:wsgicliquet#resources", last_modified_margin_ms="soon"))


def test_factory_needs_resources():
    with pytest.raises(ConfigurationError, match="resources"):
        app_factory({}, storage_url="memory://")


def test_fallback_named_in_the_ini_serves_unmatched_paths(ini):
    app = webtest.TestApp(loadapp(ini("egg:wsgicliquet#resources", resources_fallback="factory_resources:site")),
                          extra_environ=as_user(unique_user()))
    assert app.get("/scores").text == "site:/scores"
    assert app.get("/bookmarks").json == {"data": []}
