"""build_pipeline: canonical order, switching off and replacing layers, the list form, PasteDeploy, the CLI."""
import pathlib
import textwrap

import pytest
import webtest

from wsgicliquet.pipeline import CANONICAL, OUTER, PER_VERSION, Use, build_pipeline, describe, mount
from wsgicliquet.settings import ConfigurationError


def hello_app(environ, start_response):
    body = ("%s|%s" % (environ.get("SCRIPT_NAME", ""), environ["PATH_INFO"])).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


class Tagger:
    """A layer that appends its name to a response header, to observe the order of the stack."""

    def __init__(self, app, *, tag):
        self.app = app
        self.tag = tag

    @classmethod
    def from_settings(cls, app, settings, **extra):
        return cls(app, tag=settings.get("tagger_tag", "tagger"))

    def __call__(self, environ, start_response):
        environ.setdefault("order", []).append(self.tag)

        def tagged(status, headers, exc_info=None):
            return start_response(status, headers + [("X-Order", ",".join(environ["order"]))], exc_info)

        return self.app(environ, tagged)


def make_tagger(name):
    return type("Tag_" + name, (Tagger,), {"from_settings": classmethod(lambda cls, app, settings, **extra: cls(app, tag=name))})


# One tagging class per canonical layer, importable by dotted path from the settings.
for _name, _path in CANONICAL:
    globals()["Tag_" + _name] = make_tagger(_name)


class Tag_version_prefix:  # noqa: N801 - named after the layer it stands for
    """Routes every request to the first version; ``app`` is the fallback, as in the real one."""

    def __init__(self, app, versions):
        self.app = app
        self.versions = versions
        self.target = Tagger(next(iter(versions.values())), tag="version_prefix")

    @classmethod
    def from_settings(cls, app, settings, versions=None):
        return cls(app, versions)

    def __call__(self, environ, start_response):
        return self.target(environ, start_response)


def all_tagged(**extra):
    settings = {f"middleware.{name}": f"{__name__}:Tag_{name}" for name, _ in CANONICAL}
    settings.update(extra)
    return settings


def test_canonical_order_outermost_first():
    app = webtest.TestApp(build_pipeline(hello_app, all_tagged()))
    response = app.get("/")
    assert response.headers["X-Order"].split(",") == [name for name, _ in CANONICAL]


def test_a_switched_off_middleware_is_left_out():
    app = webtest.TestApp(build_pipeline(hello_app, all_tagged(**{"middleware.cors": "off",
                                                                    "middleware.batch": "off"})))
    order = app.get("/").headers["X-Order"].split(",")
    assert "cors" not in order and "batch" not in order
    assert order == [name for name, _ in CANONICAL if name not in ("cors", "batch")]


def test_a_middleware_is_replaced_from_the_settings():
    settings = all_tagged(**{"middleware.backoff": f"{__name__}:Tag_cors"})
    order = webtest.TestApp(build_pipeline(hello_app, settings)).get("/").headers["X-Order"].split(",")
    assert order.count("cors") == 2 and "backoff" not in order


def test_replacement_that_cannot_be_imported_stops_start_up():
    with pytest.raises(ConfigurationError, match="nowhere.to.be:Found"):
        build_pipeline(hello_app, all_tagged(**{"middleware.cors": "nowhere.to.be:Found"}))


def test_several_versions_each_get_their_own_stack():
    built = build_pipeline(hello_app, all_tagged(), versions={"/v1": hello_app, "v2": hello_app})
    lines = describe(built)
    assert any(line.strip() == "/v1:" for line in lines) and any(line.strip() == "/v2:" for line in lines)
    # Each version's stack holds every per-version layer.
    per_version = [name for name, _ in PER_VERSION]
    labels = [line.strip().split(" ")[0] for line in lines]
    for name, _ in CANONICAL:
        expected = (name in per_version) * 2 + (name in [outer for outer, _ in OUTER] + ["version_prefix"])
        assert labels.count(f"Tag_{name}") == expected, name


def test_list_form_applies_exactly_the_given_layers_in_order():
    stack = [Use(Tagger, tag="first"), Use(f"{__name__}:Tagger", tag="second")]
    app = webtest.TestApp(build_pipeline(hello_app, stack=stack))
    assert app.get("/").headers["X-Order"] == "first,second"


def test_mount_serves_apps_under_prefixes():
    app = webtest.TestApp(mount({"/v1": hello_app}, default=hello_app))
    assert app.get("/v1/records").text == "/v1|/records"
    assert app.get("/about").text == "|/about"
    assert webtest.TestApp(mount({"/v1": hello_app})).get("/other", status=404)


def test_describe_lists_the_chain_outermost_first():
    built = build_pipeline(hello_app, all_tagged())
    lines = [line.strip() for line in describe(built)]
    names = [line.split(" ")[0] for line in lines if line.startswith("Tag_")]
    assert names == [f"Tag_{name}" for name, _ in CANONICAL]


INI = textwrap.dedent("""
    [DEFAULT]
    project_name = demo
    backoff = 7

    [pipeline:main]
    pipeline = tagger app

    [filter:tagger]
    use = call:tests.test_pipeline:tagger_filter_factory

    [app:app]
    use = call:tests.test_pipeline:app_factory
""")


def tagger_filter_factory(global_conf, **local_conf):
    from wsgicliquet.pipeline import make_filter_factory

    return make_filter_factory(globals()["Tag_cors"])(global_conf, **local_conf)


def app_factory(global_conf, **local_conf):
    return hello_app


def test_paste_deploy_pipeline_and_cli(tmp_path, capsys):
    from paste.deploy import loadapp

    from wsgicliquet.__main__ import main, settings_from_ini

    ini = tmp_path / "app.ini"
    ini.write_text(INI)
    app = webtest.TestApp(loadapp(f"config:{ini}"))
    assert app.get("/x").headers["X-Order"] == "cors"
    assert settings_from_ini(str(ini))["backoff"] == "7"
    assert main(["pipeline", "--ini", str(ini)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("Tag_cors")
    assert "hello_app" in printed[1]


@pytest.mark.parametrize("variable, value, check", [
    pytest.param("WSGICLIQUET_MIDDLEWARE_REQUEST_LOG", "off", lambda labels: "RequestLog" not in labels, id="off"),
    pytest.param("WSGICLIQUET_MIDDLEWARE_CORS", f"{__name__}:Tag_cors",
                 lambda labels: "Tag_cors" in labels and "Cors" not in labels, id="replaced"),
])
def test_layer_switches_reach_the_filters_of_an_explicit_pipeline(monkeypatch, variable, value, check):
    """``pipeline.ini`` names every layer itself; the environment still switches one off or replaces it, as it does
    for ``app.ini`` (the switch was silently ignored)."""
    from paste.deploy import loadapp

    ini = pathlib.Path(__file__).parent.parent / "examples" / "flask_app" / "pipeline.ini"
    monkeypatch.setenv(variable, value)
    labels = [line.strip().split(" ")[0] for line in describe(loadapp(f"config:{ini}"))]
    assert check(labels)
    assert labels.count("JsonErrors") == 2 and "Backoff" in labels


def test_a_layer_switch_naming_no_layer_stops_an_explicit_pipeline(monkeypatch):
    from paste.deploy import loadapp

    ini = pathlib.Path(__file__).parent.parent / "examples" / "flask_app" / "pipeline.ini"
    monkeypatch.setenv("WSGICLIQUET_MIDDLEWARE_CORSS", "off")
    with pytest.raises(ConfigurationError, match="middleware.corss"):
        loadapp(f"config:{ini}")


def test_cli_requires_an_ini(monkeypatch, capsys):
    from wsgicliquet.__main__ import main

    monkeypatch.delenv("WSGICLIQUET_INI", raising=False)
    assert main(["pipeline"]) == 2
    assert "--ini" in capsys.readouterr().err


def test_backends_are_shared_per_configuration():
    from wsgicliquet.backends import clear_backends, load_backend
    from wsgicliquet.settings import load_settings

    clear_backends()
    try:
        first = load_backend("storage", load_settings({}, environ={}))
        assert load_backend("storage", load_settings({"project_name": "other"}, environ={})) is first
        other_prefix = load_backend("cache", load_settings({"cache_prefix": "a:"}, environ={}))
        assert load_backend("cache", load_settings({"cache_prefix": "b:"}, environ={})) is not other_prefix
        assert load_backend("storage", load_settings({"storage_url": ""}, environ={})) is None
    finally:
        clear_backends()


def test_load_backend_with_the_plain_settings_of_the_app_names_its_backends():
    """A view or a script managing groups (docs/permissions.md) calls load_backend() with the dict it gave the app:
    it must get the app's memory stores, not new empty ones (or None for a URL left to its default)."""
    from wsgicliquet.backends import clear_backends, load_backend
    from wsgicliquet.resource.app import ResourceApp
    from wsgicliquet.resource.resource import Resource

    class Thing(Resource):
        pass

    settings = {"userid_hmac_secret": "secret", "storage_pool_size": "5"}
    clear_backends()
    try:
        api = ResourceApp([Thing], settings)
        app = webtest.TestApp(build_pipeline(api, settings))
        assert load_backend("storage", settings) is api.storage
        permission = load_backend("permission", settings)
        assert permission is not None and load_backend("cache", settings) is not None
        user = app.get("/v1/", headers={"Authorization": "Basic YWxpY2U6c2VjcmV0"}).json["user"]
        permission.add_user_principal(user["id"], "group:editors")
        user = app.get("/v1/", headers={"Authorization": "Basic YWxpY2U6c2VjcmV0"}).json["user"]
        assert "group:editors" in user["principals"]
    finally:
        clear_backends()


def test_wsgi_factory_imports_an_app_by_dotted_path():
    from wsgicliquet.pipeline import wsgi_factory

    assert wsgi_factory({}, app="tests.test_pipeline:hello_app") is hello_app
    with pytest.raises(ConfigurationError, match="needs 'app"):
        wsgi_factory({})
    with pytest.raises(ConfigurationError, match="not a WSGI application"):
        wsgi_factory({}, app="tests.test_pipeline:INI")


def test_a_replacement_without_from_settings_names_the_setting():
    with pytest.raises(ConfigurationError, match="^Setting 'middleware.cors' has an invalid value"):
        build_pipeline(hello_app, {"middleware.cors": "wsgicliquet.middleware.cors"})


@pytest.mark.parametrize("command", ["pipeline", "serve", "migrate"])
@pytest.mark.parametrize("content, status, message", [
    pytest.param(None, 2, "no such file", id="missing-file"),
    pytest.param("garbage\n[DEFAULT\n", 1, "not a valid ini file", id="not-an-ini"),
    pytest.param("[DEFAULT]\nbackoff = soon\n[app:other]\nuse = egg:wsgicliquet#resources\n", 1, None,
                 id="bad-setting-or-no-main"),
])
def test_cli_configuration_errors_are_one_line_with_an_exit_status(tmp_path, command, content, status, message,
                                                                  capsys, monkeypatch):
    """A missing file, a broken ini, a bad setting or no main section: one line on stderr, never a traceback."""
    from wsgicliquet.__main__ import main

    monkeypatch.delenv("WSGICLIQUET_BACKOFF", raising=False)
    ini = tmp_path / "app.ini"
    if content is not None:
        ini.write_text(content)
    assert main([command, "--ini", str(ini)]) == status
    err = capsys.readouterr().err
    assert err.startswith(f"wsgicliquet {command}: error: ") and len(err.strip().splitlines()) <= 3
    assert message in err if message else ("'backoff'" in err or "No section 'main'" in err)


def test_cli_names_the_environment_variable_of_a_bad_value(tmp_path, capsys, monkeypatch):
    from wsgicliquet.__main__ import main

    ini = tmp_path / "app.ini"
    ini.write_text(INI)
    monkeypatch.setenv("WSGICLIQUET_BACKOFF", "soon")
    assert main(["pipeline", "--ini", str(ini)]) == 1
    err = capsys.readouterr().err
    assert "'backoff'" in err and "WSGICLIQUET_BACKOFF" in err


@pytest.mark.postgresql
def test_migrate_reads_the_settings_of_app_main(tmp_path, postgresql_url, capsys, monkeypatch):
    """A resource app configured in its own [app:main] section: migrate used to read [DEFAULT] only and 'migrate'
    the memory backends, leaving the PostgreSQL tables missing."""
    from wsgicliquet.__main__ import main

    for name in ("STORAGE_URL", "CACHE_URL", "PERMISSION_URL"):
        monkeypatch.delenv("WSGICLIQUET_" + name, raising=False)
    ini = tmp_path / "app.ini"
    ini.write_text(f"[app:main]\nuse = egg:wsgicliquet#resources\nresources = examples.flask_app.app:Bookmark\n"
                   f"storage_url = {postgresql_url}\ncache_url =\npermission_url =\n")
    assert main(["migrate", "--ini", str(ini), "--dry-run"]) == 0
    assert "storage: wsgicliquet.storage.postgresql ready" in capsys.readouterr().out


def test_migrate_of_an_unreachable_database_is_one_line(tmp_path, capsys, monkeypatch):
    from wsgicliquet.__main__ import main

    monkeypatch.delenv("WSGICLIQUET_STORAGE_URL", raising=False)
    ini = tmp_path / "app.ini"
    ini.write_text("[DEFAULT]\nstorage_url = postgresql://postgres@127.0.0.1:1/none?connect_timeout=2\n"
                   "cache_url =\npermission_url =\n")
    assert main(["migrate", "--ini", str(ini)]) == 1
    assert capsys.readouterr().err.startswith("wsgicliquet migrate: error: storage (storage_url): ")


def test_init_is_a_deprecated_alias_of_migrate(tmp_path, capsys, monkeypatch):
    """PROTOCOL.md §17: Cliquet's ``init`` command still migrates, with a warning."""
    from wsgicliquet.__main__ import main

    for name in ("STORAGE_URL", "CACHE_URL", "PERMISSION_URL"):
        monkeypatch.delenv("WSGICLIQUET_" + name, raising=False)
    ini = tmp_path / "app.ini"
    ini.write_text("[DEFAULT]\nstorage_url = memory://\ncache_url =\npermission_url =\n")
    assert main(["init", "--ini", str(ini)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "storage: wsgicliquet.storage.memory ready\n"
    assert captured.err == "wsgicliquet init is deprecated, use wsgicliquet migrate\n"


def test_serve_with_broken_logging_sections_is_one_line(tmp_path, capsys):
    from wsgicliquet.__main__ import main

    ini = tmp_path / "app.ini"
    ini.write_text("[loggers]\nkeys = root\n")
    assert main(["serve", "--ini", str(ini)]) == 1
    assert capsys.readouterr().err.startswith("wsgicliquet serve: error: ")
