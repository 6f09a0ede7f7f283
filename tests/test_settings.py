import datetime

import pytest
import webtest

from wsgicliquet.settings import SETTINGS, ConfigurationError, api_prefix, env_names, load_settings


def test_defaults_are_filled_and_typed():
    settings = load_settings({}, environ={})
    for name, setting in SETTINGS.items():
        assert name in settings
    assert settings["batch_max_requests"] == 25
    assert settings["retry_after_seconds"] == 30
    assert settings["cors_origins"] == ["*"]
    assert settings["readonly"] is False
    assert settings["backoff"] is None


@pytest.mark.parametrize("name, raw, expected", [
    pytest.param("readonly", "true", True, id="bool-true"),
    pytest.param("readonly", "Off", False, id="bool-off"),
    pytest.param("readonly", "yes", True, id="bool-yes"),
    pytest.param("backoff", "10", 10, id="opt-int"),
    pytest.param("backoff", "", None, id="opt-int-empty"),
    pytest.param("paginate_by", "None", None, id="opt-int-none"),
    pytest.param("heartbeat_timeout_seconds", "2.5", 2.5, id="float"),
    pytest.param("cors_origins", "a.org  *.b.org", ["a.org", "*.b.org"], id="list"),
    pytest.param("eos", "2026-11-30", datetime.date(2026, 11, 30), id="date"),
    pytest.param("eos", "2026-11-30T10:00:00", datetime.date(2026, 11, 30), id="datetime"),
    pytest.param("project_version", "1.4.2", "1.4.2", id="string"),
    pytest.param("collection_bookmark_delete_enabled", "false", False, id="pattern-bool"),
    pytest.param("bookmark_read_principals", "system.Everyone,group:a", ["system.Everyone", "group:a"],
                 id="pattern-list"),
])
def test_ini_strings_are_coerced(name, raw, expected):
    assert load_settings({name: raw}, environ={})[name] == expected


@pytest.mark.parametrize("name, raw", [
    ("readonly", "maybe"), ("backoff", "ten"), ("retry_after_seconds", "1.5"), ("eos", "2026-13-45"),
    ("heartbeat_timeout_seconds", "soon"), ("batch_max_requests", "[1]"),
])
def test_bad_value_stops_start_up_naming_the_setting(name, raw):
    with pytest.raises(ConfigurationError) as info:
        load_settings({name: raw}, environ={})
    assert repr(name) in str(info.value)
    assert repr(raw) in str(info.value)


def test_python_values_are_checked_too():
    with pytest.raises(ConfigurationError, match="'readonly'"):
        load_settings({"readonly": "1" and 3}, environ={})
    assert load_settings({"backoff": 5}, environ={})["backoff"] == 5


def test_values_are_never_literal_evaluated():
    settings = load_settings({"project_docs": "__import__('os')", "eos_message": "[1, 2]"}, environ={})
    assert settings["project_docs"] == "__import__('os')"
    assert settings["eos_message"] == "[1, 2]"


def test_environment_overrides_ini():
    settings = load_settings({"backoff": "5"}, environ={"WSGICLIQUET_BACKOFF": "7"})
    assert settings["backoff"] == 7


def test_dots_and_dashes_become_underscores():
    assert env_names("multiauth.policies") == ["WSGICLIQUET_MULTIAUTH_POLICIES"]
    settings = load_settings({}, environ={"WSGICLIQUET_MULTIAUTH_POLICIES": "remoteuser basicauth"})
    assert settings["multiauth.policies"] == ["remoteuser", "basicauth"]


def test_project_prefix_wins_over_generic_prefix():
    environ = {"WSGICLIQUET_BACKOFF": "7", "MYAPP_BACKOFF": "9"}
    assert load_settings({"project_name": "myapp"}, environ=environ)["backoff"] == 9
    assert load_settings({}, environ=environ)["backoff"] == 7


def test_project_name_from_environment_enables_its_prefix():
    environ = {"WSGICLIQUET_PROJECT_NAME": "kinto", "KINTO_READONLY": "true"}
    settings = load_settings({}, environ=environ)
    assert settings["project_name"] == "kinto"
    assert settings["readonly"] is True


def test_pattern_settings_given_in_ini_are_overridable():
    environ = {"WSGICLIQUET_COLLECTION_BOOKMARK_DELETE_ENABLED": "no"}
    settings = load_settings({"collection_bookmark_delete_enabled": "true"}, environ=environ)
    assert settings["collection_bookmark_delete_enabled"] is False


def test_middleware_switches_come_from_the_environment_alone():
    environ = {"WSGICLIQUET_MIDDLEWARE_REQUEST_LOG": "off", "MYAPP_MIDDLEWARE_STATSD": "off",
               "WSGICLIQUET_MIDDLEWARE_STATSD": "wsgicliquet.middleware.statsd:StatsdMetrics"}
    settings = load_settings({"project_name": "myapp"}, environ=environ)
    assert settings["middleware.request_log"] == "off"
    assert settings["middleware.statsd"] == "off"  # the project prefix wins
    assert "middleware.statsd" not in load_settings({}, environ={"WSGICLIQUET_MIDDLEWARESTATSD": "off"})


def test_resource_pattern_settings_come_from_the_environment_alone():
    environ = {"WSGICLIQUET_COLLECTION_BOOKMARK_DELETE_ENABLED": "false", "MYAPP_RECORD_NOTE_PUT_ENABLED": "no",
               "WSGICLIQUET_RECORD_NOTE_PUT_ENABLED": "true", "WSGICLIQUET_BOOKMARK_READ_PRINCIPALS": "system.Everyone",
               "WSGICLIQUET_BOOKMARK_CACHE_EXPIRES_SECONDS": "30", "WSGICLIQUET_UNRELATED_THING": "x"}
    settings = load_settings({"project_name": "myapp"}, environ=environ)
    assert settings["collection_bookmark_delete_enabled"] is False
    assert settings["record_note_put_enabled"] is False  # the project prefix wins
    assert settings["bookmark_read_principals"] == ["system.Everyone"]
    assert settings["bookmark_cache_expires_seconds"] == 30
    assert "unrelated_thing" not in settings
    with pytest.raises(ConfigurationError, match="collection_bookmark_get_enabled"):
        load_settings({}, environ={"WSGICLIQUET_COLLECTION_BOOKMARK_GET_ENABLED": "maybe"})


def test_an_endpoint_switched_off_by_the_environment_answers_405():
    from wsgicliquet import Resource, ResourceApp

    class Bookmark(Resource):
        schema = {"type": "object"}

    settings = load_settings({}, environ={"WSGICLIQUET_COLLECTION_BOOKMARK_DELETE_ENABLED": "false"})
    app = webtest.TestApp(ResourceApp([Bookmark], settings), extra_environ={"wsgicliquet.userid": "alice"})
    assert app.delete("/bookmarks", status=405).json["errno"] == 115


def test_middleware_switched_off_by_the_environment_leaves_the_pipeline():
    from wsgicliquet.pipeline import build_pipeline, describe

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b""]

    layers = "\n".join(describe(build_pipeline(app, load_settings(
        {}, environ={"WSGICLIQUET_MIDDLEWARE_REQUEST_LOG": "off", "WSGICLIQUET_MIDDLEWARE_CORS": "off"}))))
    assert "RequestLog" not in layers and "Cors" not in layers and "JsonErrors" in layers


def test_bad_environment_value_names_the_setting():
    with pytest.raises(ConfigurationError, match="'retry_after_seconds'.*'soon'"):
        load_settings({}, environ={"WSGICLIQUET_RETRY_AFTER_SECONDS": "soon"})


def test_prefixed_spellings_are_normalized_and_conflicts_refused():
    assert load_settings({"cliquet.backoff": "3"}, environ={})["backoff"] == 3
    assert load_settings({"project_name": "kinto", "kinto.backoff": "4"}, environ={})["backoff"] == 4
    with pytest.raises(ConfigurationError, match="in conflict"):
        load_settings({"backoff": "3", "cliquet.backoff": "4"}, environ={})


@pytest.mark.parametrize("url", ["mysql://localhost/db", "memcached://x", "nothing"])
def test_unknown_backend_stops_start_up(url):
    with pytest.raises(ConfigurationError) as info:
        load_settings({"storage_url": url}, environ={})
    assert "'storage_url'" in str(info.value) and url in str(info.value)


def test_http_api_version_derives_from_project_version():
    settings = load_settings({"project_version": "2.4.1"}, environ={})
    assert settings["http_api_version"] == "2.4"
    assert api_prefix(settings) == "/v2"
    assert api_prefix(load_settings({"http_api_version": "3.0"}, environ={})) == "/v3"
    with pytest.raises(ConfigurationError, match="http_api_version"):
        load_settings({"http_api_version": "x.1"}, environ={})


def test_batch_limit_zero_means_unlimited():
    assert load_settings({"batch_max_requests": "0"}, environ={})["batch_max_requests"] is None


def test_a_layer_name_that_does_not_exist_stops_start_up():
    """A typo in `middleware.<layer>` would otherwise leave the layer silently on."""
    from wsgicliquet.pipeline import build_pipeline

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b""]

    for environ in ({"WSGICLIQUET_MIDDLEWARE_STATDS": "off"}, {}):
        raw = {} if environ else {"middleware.requestlog": "off"}
        with pytest.raises(ConfigurationError, match=r"middleware\.(statds|requestlog).*request_log"):
            build_pipeline(app, load_settings(raw, environ=environ))
    with pytest.raises(ConfigurationError, match=r"middleware\.corss"):
        build_pipeline(app, load_settings({}, environ={}), versions={"/v1": (app, {"middleware.corss": "off"})})
