"""Querystring conformance (PROTOCOL.md §4) on every storage backend: odd inputs are 400s, never 5xx."""
from __future__ import annotations

from typing import Optional
from urllib.parse import urlsplit

import pytest

from tests.resource.conftest import as_user, unique_user
from wsgicliquet.resource import querystring as qs


@pytest.fixture
def app(make_app, any_storage):
    """The resource app on each backend, as a user of its own (the real databases are shared)."""
    app = make_app(backend=any_storage)
    app.extra_environ = as_user(unique_user())
    return app


def test_too_many_sort_fields_is_a_400(app):
    """A long ``_sort`` made PostgreSQL fail (503: its target lists are limited) and the keyset query slow."""
    app.post_json("/notes", {"data": {"f0": 1}})
    fields = ",".join(f"f{i}" for i in range(500))
    for verb in ("get", "head", "delete"):
        response = getattr(app, verb)(f"/notes?_sort={fields}", status=400)
        if verb == "head":
            continue
        message = f"_sort accepts at most {qs.MAX_SORT_FIELDS} fields"
        assert response.json["errno"] == 107
        assert response.json["message"] == message
        assert response.json["details"] == [{"location": "querystring", "name": "_sort", "description": message}]
    assert len(app.get("/notes").json["data"]) == 1


def test_sort_fields_up_to_the_maximum_page_through(app):
    for position in range(3):
        app.post_json("/notes", {"data": {"f0": position % 2, "f1": position}})
    fields = ",".join(["-f0", "f1"] + [f"x{i}" for i in range(getattr(qs, "MAX_SORT_FIELDS", 20) - 2)])
    seen, url = [], f"/notes?_limit=1&_sort={fields}"
    while url:
        response = app.get(url)
        seen += [record["f1"] for record in response.json["data"]]
        url = _local(response.headers.get("Next-Page"))
    assert seen == [1, 0, 2]


def _local(url: Optional[str]) -> Optional[str]:
    """The path and query of an absolute URL (WebTest requests paths)."""
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


@pytest.mark.parametrize("query, matches", [
    pytest.param('id="{id}"', True, id="eq"),
    pytest.param('in_id="{id}","other"', True, id="in"),
    pytest.param('not_id="{id}"', False, id="not"),
    pytest.param('exclude_id="{id}"', False, id="exclude"),
    pytest.param("id={id}", True, id="bare"),
])
def test_id_values_may_be_json_strings(app, query, matches):
    """Part A: filter values are read as JSON where they parse, so ``"<id>"`` is the id, as ``<id>`` is."""
    record = app.post_json("/notes", {"data": {}}).json["data"]
    found = app.get("/notes?" + query.format(id=record["id"]).replace('"', "%22")).json["data"]
    assert [item["id"] for item in found] == ([record["id"]] if matches else [])


def test_more_filters_than_the_limit_is_a_400(app):
    from wsgicliquet.resource.querystring import MAX_FILTERS

    app.post_json("/notes", {"data": {"f0": 0}})
    many = "&".join(f"not_f{i}={i + 1}" for i in range(MAX_FILTERS))
    assert len(app.get(f"/notes?{many}&_since=1&_before=99999999999999").json["data"]) == 1
    error = app.get(f"/notes?{many}&f0=0", status=400).json
    assert (error["errno"], error["details"][0]["location"]) == (107, "querystring")
    assert "filters" in error["message"]
    app.delete(f"/notes?{many}&f0=0", status=400)
    assert len(app.get("/notes").json["data"]) == 1
