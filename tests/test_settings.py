import datetime

import pytest
import webtest

from wsgicliquet.settings import SETTINGS, ConfigurationError, api_prefix, env_names, load_settings
from wsgicliquet.storage.memory import Storage as MemoryStorage


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
    settings = load_settings({"cache_prefix": "__import__('os')", "eos_message": "[1, 2]"}, environ={})
    assert settings["cache_prefix"] == "__import__('os')"
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


@pytest.mark.parametrize("raw, environ", [
    pytest.param({"cliquet.project_name": "kinto"}, {}, id="cliquet-prefixed"),
    pytest.param({"wsgicliquet.project_name": "kinto"}, {}, id="wsgicliquet-prefixed"),
    pytest.param({}, {"WSGICLIQUET_PROJECT_NAME": "kinto"}, id="environment"),
])
def test_project_prefix_follows_the_project_name_however_spelled(raw, environ):
    """§16.1: project_name is read first, so ``kinto.backoff`` is ``backoff`` whichever spelling named the project."""
    settings = load_settings({**raw, "kinto.backoff": "4"}, environ=environ)
    assert settings["project_name"] == "kinto"
    assert settings["backoff"] == 4
    assert "kinto.backoff" not in settings


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


@pytest.mark.parametrize("name, raw", [
    pytest.param("storage_pool_size", "0", id="pool-size-zero"),
    pytest.param("cache_pool_size", "-3", id="pool-size-negative"),
    pytest.param("permission_pool_timeout", "-1", id="pool-timeout-negative"),
    pytest.param("storage_pool_timeout", "nan", id="pool-timeout-nan"),
    pytest.param("storage_statement_timeout", "-1", id="statement-timeout-negative"),
    pytest.param("storage_max_request_size", "0", id="max-request-size-zero"),
    pytest.param("paginate_by", "-1", id="paginate-by-negative"),
    pytest.param("last_modified_margin_ms", "-1", id="margin-negative"),
    pytest.param("batch_max_requests", "-1", id="batch-max-negative"),
    pytest.param("cors_max_age_seconds", "-1", id="max-age-negative"),
    pytest.param("retry_after_seconds", "-1", id="retry-after-negative"),
    pytest.param("backoff_percentage", "101", id="percentage-over-100"),
    pytest.param("heartbeat_timeout_seconds", "0", id="heartbeat-timeout-zero"),
    pytest.param("bookmark_cache_expires_seconds", "-1", id="cache-expires-negative"),
    pytest.param("error_info_link", "not a url", id="info-link-not-url"),
    pytest.param("eos_url", "example.org/eos", id="eos-url-relative"),
    pytest.param("project_docs", "ftp://example.org", id="docs-not-http"),
    pytest.param("http_scheme", "ftp", id="scheme-unknown"),
    pytest.param("http_host", "a b", id="host-with-space"),
    pytest.param("http_host", "example.org/path", id="host-with-path"),
])
def test_out_of_range_or_malformed_values_stop_start_up(name, raw):
    """These coerce to the right type but used to start, then fail every request (paginate_by=-1 was a 500)."""
    with pytest.raises(ConfigurationError, match=f"^Setting '{name}' has an invalid value"):
        load_settings({name: raw}, environ={})


@pytest.mark.parametrize("name, raw, expected", [
    pytest.param("batch_max_requests", "0", None, id="batch-zero-no-limit"),
    pytest.param("cors_max_age_seconds", "0", 0, id="max-age-zero"),
    pytest.param("storage_statement_timeout", "0", 0.0, id="statement-timeout-zero"),
    pytest.param("http_host", "public.example.org:8443", "public.example.org:8443", id="host-port"),
    pytest.param("http_host", "[::1]:81", "[::1]:81", id="host-ipv6"),
    pytest.param("project_docs", "https://example.org/docs", "https://example.org/docs", id="docs-url"),
])
def test_boundary_values_are_accepted(name, raw, expected):
    assert load_settings({name: raw}, environ={})[name] == expected


def test_a_bad_environment_value_names_the_setting_and_the_variable():
    with pytest.raises(ConfigurationError, match=r"'backoff'.*'soon'.*WSGICLIQUET_BACKOFF"):
        load_settings({}, environ={"WSGICLIQUET_BACKOFF": "soon"})
    with pytest.raises(ConfigurationError, match=r"'paginate_by'.*DEMO_PAGINATE_BY"):
        load_settings({"project_name": "demo"}, environ={"DEMO_PAGINATE_BY": "lots"})


@pytest.mark.parametrize("raw, name", [
    pytest.param({"storage_backend": "nowhere.module:Storage"}, "storage_backend", id="storage-backend"),
    pytest.param({"cache_backend": "wsgicliquet"}, "cache_backend", id="cache-backend-module-only"),
    pytest.param({"permission_backend": "nowhere:Permission"}, "permission_backend", id="permission-backend"),
])
def test_a_backend_path_that_cannot_be_imported_names_its_setting(raw, name):
    from wsgicliquet.backends import load_backend

    kind = name.split("_")[0]
    with pytest.raises(ConfigurationError, match=f"^Setting '{name}' has an invalid value .*cannot import"):
        load_backend(kind, load_settings(raw, environ={}))


class NotABackend:
    """Has from_settings() but implements no contract."""

    @classmethod
    def from_settings(cls, settings, prefix):
        return cls()


class LyingStorage(MemoryStorage):
    """A subclass of the contract whose from_settings() returns something else."""

    @classmethod
    def from_settings(cls, settings, prefix="storage"):
        return NotABackend()


@pytest.mark.parametrize("kind", ["storage", "cache", "permission"])
def test_a_backend_class_that_is_not_of_the_contract_stops_start_up(kind):
    """PROTOCOL.md §17: a wrong type is a start-up error (it was an AttributeError at the first request, or an
    error about the heartbeat)."""
    from wsgicliquet.backends import clear_backends, load_backend
    from wsgicliquet.pipeline import build_pipeline

    settings = {f"{kind}_backend": "tests.test_settings:NotABackend", "userid_hmac_secret": "x"}
    clear_backends()
    try:
        with pytest.raises(ConfigurationError, match=f"^Setting '{kind}_backend' has an invalid value "
                                                     f"'tests.test_settings:NotABackend': not a subclass of "):
            build_pipeline(lambda environ, start_response: [], settings)
        if kind == "storage":
            with pytest.raises(ConfigurationError, match="from_settings.. returned <tests.test_settings.NotAB"):
                load_backend(kind, {"storage_backend": "tests.test_settings:LyingStorage"})
    finally:
        clear_backends()


@pytest.mark.redis
def test_a_redis_url_that_does_not_parse_names_its_setting():
    """redis-py used database 0 for '/notadb' without a word; a bad port was an error naming no setting."""
    from wsgicliquet.backends import load_backend

    for url in ("redis://127.0.0.1:6379/notadb", "redis://127.0.0.1:noport/13"):
        with pytest.raises(ConfigurationError, match=f"^Setting 'cache_url' has an invalid value '{url}'"):
            load_backend("cache", load_settings({"cache_url": url}, environ={}))


def test_a_malformed_sentry_dsn_names_the_setting():
    from wsgicliquet.middleware.sentry import Sentry

    with pytest.raises(ConfigurationError, match="^Setting 'sentry_dsn' has an invalid value 'notadsn'"):
        Sentry.from_settings(lambda environ, start_response: [], load_settings({"sentry_dsn": "notadsn"}, environ={}))


@pytest.mark.parametrize("raw, name", [
    pytest.param({"id_generator": "nowhere:Gen"}, "id_generator", id="id-generator"),
    pytest.param({"id_generator": ""}, "id_generator", id="id-generator-empty"),
    pytest.param({"resources_fallback": "nowhere:app"}, "resources_fallback", id="fallback"),
])
def test_a_resource_app_path_that_cannot_be_imported_names_its_setting(raw, name):
    from wsgicliquet.resource.app import app_factory

    with pytest.raises(ConfigurationError, match=f"^Setting '{name}' has an invalid value"):
        app_factory({}, resources="examples.flask_app.app:Bookmark", **raw)


def test_options_of_named_policies_and_listeners_come_from_the_environment_alone():
    """A container sets only variables: the option of a policy or listener the ini does not mention still applies,
    its name taken from the policy or listener list."""
    environ = {"WSGICLIQUET_MULTIAUTH_POLICIES": "remoteuser basicauth",
               "WSGICLIQUET_MULTIAUTH_POLICY_REMOTEUSER_ENVIRON_KEY": "HTTP_X_USER",
               "ARCADE_EVENT_LISTENERS_QUEUE_LISTNAME": "arcade.events",
               "WSGICLIQUET_EVENT_LISTENERS_QUEUE_LISTNAME": "weaker",
               "WSGICLIQUET_MULTIAUTH_POLICY_UNLISTED_OPTION": "ignored"}
    settings = load_settings({"project_name": "arcade", "event_listeners": "queue",
                              "event_listeners.queue.use": "wsgicliquet.listeners.redis"}, environ=environ)
    assert settings["multiauth.policy.remoteuser.environ_key"] == "HTTP_X_USER"
    assert settings["event_listeners.queue.listname"] == "arcade.events", "the project's variable wins"
    assert "multiauth.policy.unlisted.option" not in settings
    given = load_settings({"multiauth.policies": "remoteuser", "multiauth.policy.remoteuser.environ_key": "HTTP_A"},
                          environ={"WSGICLIQUET_MULTIAUTH_POLICY_REMOTEUSER_ENVIRON_KEY": "HTTP_B"})
    assert given["multiauth.policy.remoteuser.environ_key"] == "HTTP_B", "a variable beats the ini"
