"""The README documents every setting and starts with the two commands of a fresh machine."""
from pathlib import Path

from wsgicliquet.settings import SETTINGS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_documented_with_its_default():
    for name in SETTINGS:
        assert f"| `{name}` |" in README, name


def test_readme_starts_with_the_setup_and_test_commands():
    first_block = README.split("```sh", 1)[1].split("```", 1)[0].strip().splitlines()
    assert "wsgicliquet serve --ini examples/flask_app/app.ini" in first_block[0]
    assert "pip install -e '.[dev]'" in first_block[0]
    assert first_block[1] == ".venv/bin/python -m pytest"


def _python_blocks(text: str) -> list:
    return [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]


def _run(source: str) -> dict:
    namespace: dict = {"__name__": "docs_sample"}
    exec(compile(source, "<docs sample>", "exec"), namespace)
    return namespace


def test_readme_python_sample_serves_the_site_and_the_api():
    import webtest

    namespace = _run(_python_blocks(README)[0])
    site = namespace["site"]
    site.add_url_rule("/", "home", lambda: "home page")
    api = webtest.TestApp(site)
    assert api.get("/").text == "home page"
    alice = {"Authorization": "Basic YWxpY2U6c2VjcmV0"}
    created = api.post_json("/v1/bookmarks", {"data": {"url": "https://a.org", "kept": 1}}, headers=alice)
    assert created.status_code == 201 and created.json["data"]["kept"] == 1  # preserve_unknown
    error = api.post_json("/v1/bookmarks", {"data": {"url": "not a uri"}}, headers=alice, status=400).json
    assert error["details"][0]["name"] == "data.url"


def test_resources_doc_sample_keeps_the_server_set_field():
    """The first sample of docs/resources.md: ``device`` comes from the User-Agent of the creation and stays, even
    when a PUT (which replaces the whole record) omits it or sends another value."""
    import webtest

    docs = (Path(__file__).resolve().parent.parent / "docs" / "resources.md").read_text()
    namespace = _run(_python_blocks(docs)[0])
    environ = {"wsgicliquet.userid": "basicauth:alice",
               "wsgicliquet.principals": ["system.Everyone", "system.Authenticated", "basicauth:alice"]}
    api = webtest.TestApp(namespace["app"], extra_environ=environ)
    record = api.post_json("/bookmarks", {"data": {"url": "https://a.org"}},
                           headers={"User-Agent": "reader/1"}).json["data"]
    assert record["device"] == "reader/1"
    url = f"/bookmarks/{record['id']}"
    api.patch_json(url, {"data": {"device": "forged"}}, status=400)
    assert api.put_json(url, {"data": {"url": "https://a.org", "title": "t"}}).json["data"]["device"] == "reader/1"
    assert api.put_json(url, {"data": {"url": "https://a.org", "device": "x"}}).json["data"]["device"] == "reader/1"
    assert api.patch_json(url, {"data": {"title": "u"}}).json["data"]["device"] == "reader/1"


def test_resources_doc_shows_every_argument_of_the_app():
    import inspect
    import re

    from wsgicliquet import ResourceApp

    docs = (Path(__file__).resolve().parent.parent / "docs" / "resources.md").read_text()
    documented = re.search(r"^ResourceApp\((.*)\)$", docs, re.MULTILINE).group(1)
    names = [part.split("=")[0].strip() for part in documented.split(",") if part.strip() != "*"]
    assert names == list(inspect.signature(ResourceApp).parameters)
