import base64
import hashlib
import hmac
import logging

import bottle
import flask
import pytest
import webtest

from wsgicliquet import environ as keys
from wsgicliquet.errors import unauthorized_or_forbidden
from wsgicliquet.middleware import auth
from wsgicliquet.middleware.auth import Authentication, BasicAuth, Policy, RemoteUser
from wsgicliquet.middleware.cors import Cors
from wsgicliquet.middleware.json_errors import JsonErrors
from wsgicliquet.permission.memory import Permission
from wsgicliquet.settings import ConfigurationError, load_settings

from .probes import Body

ALICE = "basicauth:c2c5fb7523b5fcf46a424a6e371ef158633ff7636c31fb946cf8d34a4c05aa90"  # PROTOCOL.md §22 item 4


def basic(credentials, encoding="utf-8"):
    return "Basic " + base64.b64encode(credentials.encode(encoding)).decode("ascii")


def digest(message, secret="abc"):
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


# Policies users plug in (imported by dotted name from the settings below).
def token_policy(environ):
    header = environ.get("HTTP_AUTHORIZATION", "")
    return header[len("Token "):] or None if header.startswith("Token ") else None


class HeaderPolicy:
    def __init__(self, header_name):
        self.key = "HTTP_" + header_name.upper().replace("-", "_")

    def __call__(self, environ):
        return environ.get(self.key)


# --- three apps showing what a view sees -----------------------------------------------------------------------

def who(environ):
    return {"userid": environ.get(keys.USERID), "principals": environ.get(keys.PRINCIPALS),
            "authn_type": environ.get(keys.AUTHN_TYPE)}


def bare_app(environ, start_response):
    if environ["PATH_INFO"] == "/private":
        return unauthorized_or_forbidden(environ[keys.PRINCIPALS])(environ, start_response)
    body = flask.json.dumps(who(environ)).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def flask_app():
    app = flask.Flask("auth_flask")

    @app.get("/")
    def index():
        return who(flask.request.environ)

    @app.get("/private")
    def private():
        return unauthorized_or_forbidden(flask.request.environ[keys.PRINCIPALS])

    return app


def bottle_app():
    app = bottle.Bottle()

    @app.get("/")
    def index():
        return who(bottle.request.environ)

    @app.get("/private")
    def private():
        error = unauthorized_or_forbidden(bottle.request.environ[keys.PRINCIPALS])
        return bottle.HTTPResponse(error.body, status=error.code, headers=dict(error.headers))

    return app


APPS = {"bare": lambda: bare_app, "flask": flask_app, "bottle": bottle_app}


@pytest.fixture(params=sorted(APPS))
def make(request):
    def build(**options):
        options.setdefault("userid_hmac_secret", "abc")
        return webtest.TestApp(Authentication(APPS[request.param](), **options), lint=True)

    return build


# --- Basic Auth ------------------------------------------------------------------------------------------------

BASIC = [
    pytest.param(basic("alice:secret"), ALICE, id="checklist-alice"),
    pytest.param("basic " + basic("alice:secret")[6:], ALICE, id="scheme-case-insensitive"),
    pytest.param("  " + basic("alice:secret") + "  ", ALICE, id="surrounding-blanks"),
    pytest.param(basic("alice:"), "basicauth:" + digest(b"alice:"), id="empty-password"),
    pytest.param(basic("alice:se:cret"), "basicauth:" + digest(b"alice:se:cret"), id="colon-in-password"),
    pytest.param(basic("élodie:pässwörd"), "basicauth:" + digest("élodie:pässwörd".encode()), id="utf-8"),
    pytest.param(basic("zoé:pw", "latin-1"), "basicauth:" + digest("zoé:pw".encode()), id="latin-1"),
    pytest.param(basic(":secret"), None, id="empty-user"),
    pytest.param(basic("alice"), None, id="no-colon"),
    pytest.param("Basic !!!not-base64", None, id="malformed-base64"),
    pytest.param("Basic YWxpY2U6c2VjcmV0===x", None, id="trailing-garbage"),
    pytest.param("Basic", None, id="no-token"),
    pytest.param("Bearer abc", None, id="unknown-scheme"),
    pytest.param("", None, id="empty-header"),
]


@pytest.mark.parametrize("header, userid", BASIC)
def test_basicauth_user_ids(make, header, userid):
    body = make().get("/", headers={"Authorization": header}).json
    if userid is None:
        assert body == {"userid": None, "principals": ["system.Everyone"], "authn_type": None}
    else:
        hexdigest = userid.split(":", 1)[1]
        assert body == {"userid": userid, "authn_type": "basicauth",
                        "principals": ["system.Everyone", "system.Authenticated", userid,
                                       "basicauth_" + hexdigest]}


def test_anonymous_without_header(make):
    assert make().get("/").json["principals"] == ["system.Everyone"]


def test_user_id_depends_on_the_secret(make):
    response = make(userid_hmac_secret="another").get("/", headers={"Authorization": basic("alice:secret")})
    assert response.json["userid"] == "basicauth:" + digest(b"alice:secret", "another")


@pytest.mark.parametrize("headers, status, errno", [
    pytest.param({}, 401, 104, id="anonymous-401"),
    pytest.param({"Authorization": basic(":nobody")}, 401, 104, id="invalid-credentials-401"),
    pytest.param({"Authorization": basic("alice:secret")}, 403, 121, id="authenticated-403"),
])
def test_views_decide_401_or_403(make, headers, status, errno):
    response = make().get("/private", headers=headers, status=status)
    assert response.json["errno"] == errno
    assert ("WWW-Authenticate" in response.headers) == (status == 401)


def test_empty_secret_warns_at_start_up(caplog):
    with caplog.at_level(logging.WARNING, logger="wsgicliquet"):
        Authentication(bare_app, policies=["remoteuser"])
        assert caplog.records == []
        Authentication(bare_app, policies=["basicauth"], userid_hmac_secret="set")
        assert caplog.records == []
        Authentication(bare_app, policies=["basicauth"])
    [record] = caplog.records
    assert record.levelno == logging.WARNING and "userid_hmac_secret" in record.getMessage()


def test_recent_headers_are_remembered():
    policy = BasicAuth("abc", cache_size=2)
    environ = {"HTTP_AUTHORIZATION": basic("alice:secret")}
    assert [policy(environ) for _ in range(3)] == [ALICE.split(":", 1)[1]] * 3
    assert policy._userid.cache_info().misses == 1


# --- remote user, order, custom policies -----------------------------------------------------------------------

@pytest.mark.parametrize("policies, environ, headers, userid", [
    pytest.param(["remoteuser"], {"REMOTE_USER": "bob"}, {}, "remoteuser:bob", id="remoteuser"),
    pytest.param(["remoteuser"], {"REMOTE_USER": ""}, {}, None, id="remoteuser-empty"),
    pytest.param(["basicauth", "remoteuser"], {"REMOTE_USER": "bob"}, {"Authorization": basic("alice:secret")},
                 ALICE, id="first-wins"),
    pytest.param(["remoteuser", "basicauth"], {"REMOTE_USER": "bob"}, {"Authorization": basic("alice:secret")},
                 "remoteuser:bob", id="order-matters"),
    pytest.param(["basicauth", "remoteuser"], {"REMOTE_USER": "bob"}, {"Authorization": "Bearer x"},
                 "remoteuser:bob", id="falls-through"),
    pytest.param([("token", token_policy)], {}, {"Authorization": "Token t0k"}, "token:t0k", id="pair"),
    pytest.param(["tests.middleware.test_auth:token_policy"], {}, {"Authorization": "Token t0k"},
                 "token_policy:t0k", id="dotted-callable"),
    pytest.param([RemoteUser("HTTP_X_USER")], {}, {"X-User": "carol"}, "remoteuser:carol", id="policy-object"),
    # Ids no backend could store as a principal (PostgreSQL refuses NUL; indexes bound the length) identify nobody.
    pytest.param(["remoteuser"], {"REMOTE_USER": "a\x00b"}, {}, None, id="remoteuser-nul"),
    pytest.param(["remoteuser"], {"REMOTE_USER": "x" * 245}, {}, "remoteuser:" + "x" * 245, id="remoteuser-longest"),
    pytest.param(["remoteuser"], {"REMOTE_USER": "x" * 246}, {}, None, id="remoteuser-too-long"),
    pytest.param(["remoteuser", "basicauth"], {"REMOTE_USER": "a\x00b"}, {"Authorization": basic("alice:secret")},
                 ALICE, id="unusable-falls-through"),
    pytest.param([("custom", lambda environ: "\ud800")], {}, {}, None, id="lone-surrogate"),
])
def test_policies(make, policies, environ, headers, userid):
    body = make(policies=policies).get("/", headers=headers, extra_environ=environ).json
    assert body["userid"] == userid
    if userid:
        name, _, raw = userid.partition(":")
        assert body["authn_type"] == name
        assert body["principals"][:4] == ["system.Everyone", "system.Authenticated", userid, f"{name}_{raw}"]


def test_builtin_policies_follow_the_protocol():
    assert isinstance(BasicAuth("abc"), Policy)
    assert isinstance(RemoteUser(), Policy)
    assert isinstance(token_policy, Policy)


# --- groups from the permission backend ---------------------------------------------------------------------------

class CountingPermission(Permission):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def user_principals(self, user_id):
        self.calls += 1
        return super().user_principals(user_id)


@pytest.fixture
def permission():
    backend = CountingPermission()
    backend.add_user_principal(ALICE, "group:editors")
    backend.add_user_principal(ALICE, "/buckets/b/groups/admins")
    return backend


def test_groups_from_the_permission_backend(make, permission):
    body = make(permission=permission).get("/", headers={"Authorization": basic("alice:secret")}).json
    assert body["principals"] == ["system.Everyone", "system.Authenticated", ALICE,
                                  "basicauth_" + ALICE.split(":")[1], "/buckets/b/groups/admins", "group:editors"]
    assert make(permission=permission).get("/").json["principals"] == ["system.Everyone"]


def test_groups_from_a_backend_in_the_environ(permission):
    app = webtest.TestApp(Authentication(bare_app, userid_hmac_secret="abc"), lint=True)
    body = app.get("/", headers={"Authorization": basic("alice:secret")},
                   extra_environ={keys.PERMISSION: permission}).json
    assert "group:editors" in body["principals"]


def test_groups_asked_once_per_batch(permission):
    middleware = Authentication(lambda environ, start_response: environ[keys.PRINCIPALS], userid_hmac_secret="abc",
                                permission=permission)
    parent = {}
    for _ in range(3):
        environ = {"HTTP_AUTHORIZATION": basic("alice:secret"), keys.PARENT_REQUEST: parent}
        assert "group:editors" in middleware(environ, None)
    assert permission.calls == 1
    middleware({"HTTP_AUTHORIZATION": basic("alice:secret")}, None)
    assert permission.calls == 2  # a request outside a batch asks again


def test_anonymous_request_loses_a_stale_identity():
    middleware = Authentication(lambda environ, start_response: environ, userid_hmac_secret="abc")
    environ = middleware({keys.USERID: "basicauth:forged", keys.AUTHN_TYPE: "basicauth"}, None)
    assert keys.USERID not in environ and keys.AUTHN_TYPE not in environ
    assert environ[keys.PRINCIPALS] == ["system.Everyone"]


# --- header only, switch ------------------------------------------------------------------------------------------

def test_body_is_never_buffered_and_close_passes_through():
    body = Body()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body

    result = Authentication(app, userid_hmac_secret="abc")({}, lambda status, headers, exc_info=None: None)
    assert result is body and body.produced == 0
    assert list(result) == [b"one", b"two"]
    result.close()
    assert body.closed


def test_switched_off_changes_nothing():
    middleware = Authentication(lambda environ, start_response: environ, policies=[])
    assert not middleware.enabled
    assert middleware({"HTTP_AUTHORIZATION": basic("alice:secret")}, None) == {
        "HTTP_AUTHORIZATION": basic("alice:secret")}


# --- configuration ---------------------------------------------------------------------------------------------

SETTINGS_CASES = [
    pytest.param({}, {"Authorization": basic("alice:secret")}, {}, ALICE, id="default-basicauth"),
    pytest.param({"multiauth.policies": "remoteuser"}, {}, {"REMOTE_USER": "bob"}, "remoteuser:bob",
                 id="remoteuser"),
    pytest.param({"multiauth.policies": "basicauth token",
                  "multiauth.policy.token.use": "tests.middleware.test_auth:token_policy"},
                 {"Authorization": "Token t0k"}, {}, "token:t0k", id="named-dotted-callable"),
    pytest.param({"multiauth.policies": "header",
                  "multiauth.policy.header.use": "tests.middleware.test_auth:HeaderPolicy",
                  "multiauth.policy.header.header_name": "X-User"},
                 {"X-User": "dave"}, {}, "header:dave", id="class-with-options"),
    pytest.param({"multiauth.policy.basicauth.use": "cliquet.authentication.BasicAuthAuthenticationPolicy"},
                 {"Authorization": basic("alice:secret")}, {}, ALICE, id="cliquet-ini-compatible"),
    pytest.param({"multiauth.policy.basicauth.cache_size": "2"}, {"Authorization": basic("alice:secret")}, {}, ALICE,
                 id="basicauth-option"),
    pytest.param({"multiauth.policies": "Sso", "multiauth.policy.sso.use": "wsgicliquet.middleware.auth:RemoteUser",
                  "multiauth.policy.sso.environ_key": "HTTP_X_SSO"}, {"X-SSO": "erin"}, {}, "sso:erin",
                 id="builtin-class-renamed"),
]


@pytest.mark.parametrize("raw, headers, environ, userid", SETTINGS_CASES)
def test_from_settings(raw, headers, environ, userid):
    settings = load_settings({"userid_hmac_secret": "abc", "permission_url": "", **raw}, environ={})
    app = webtest.TestApp(Authentication.from_settings(bare_app, settings), lint=True)
    assert app.get("/", headers=headers, extra_environ=environ).json["userid"] == userid


@pytest.mark.parametrize("raw, message", [
    pytest.param({"multiauth.policies": "fxa"}, "multiauth.policy.fxa.use", id="unknown-name"),
    pytest.param({"multiauth.policies": "x", "multiauth.policy.x.use": "nowhere.module:thing"},
                 "'multiauth.policy.x.use'.*cannot import", id="bad-import"),
    pytest.param({"multiauth.policies": "t", "multiauth.policy.t.use": "tests.middleware.test_auth:token_policy",
                  "multiauth.policy.t.size": "3"}, "takes no options", id="options-for-a-function"),
    pytest.param({"multiauth.policies": "h", "multiauth.policy.h.use": "tests.middleware.test_auth:HeaderPolicy"},
                 "does not accept", id="missing-class-option"),
    pytest.param({"multiauth.policies": "h", "multiauth.policy.h.use": "tests.middleware.test_auth:ALICE"},
                 "not callable", id="not-callable"),
])
def test_bad_configuration_fails_at_start_up(raw, message):
    settings = load_settings({"userid_hmac_secret": "abc", "permission_url": "", **raw}, environ={})
    with pytest.raises(ConfigurationError, match=message):
        Authentication.from_settings(bare_app, settings)


@pytest.mark.parametrize("policy", [("", token_policy), ("a:b", token_policy), token_policy])
def test_policy_needs_a_valid_name(policy):
    with pytest.raises(ConfigurationError):
        Authentication(bare_app, policies=[policy])


def test_from_settings_uses_the_permission_backend():
    settings = load_settings({"userid_hmac_secret": "abc", "permission_url": "memory://"}, environ={})
    middleware = Authentication.from_settings(bare_app, settings)
    assert isinstance(middleware.permission, Permission)


def test_filter_factory():
    wrap = auth.filter_factory({"userid_hmac_secret": "abc"}, **{"multiauth.policies": "basicauth remoteuser",
                                                                   "permission_url": ""})
    app = webtest.TestApp(wrap(bare_app), lint=True)
    assert app.get("/", headers={"Authorization": basic("alice:secret")}).json["userid"] == ALICE
    assert app.get("/", extra_environ={"REMOTE_USER": "bob"}).json["userid"] == "remoteuser:bob"


def test_canonical_stack_gives_browsers_readable_401_and_403():
    stack = Cors(JsonErrors(Authentication(flask_app(), userid_hmac_secret="abc"), paths=["/"]))
    app = webtest.TestApp(stack, lint=True)
    anonymous = app.get("/private", headers={"Origin": "https://a.example"}, status=401)
    assert anonymous.json["errno"] == 104
    assert anonymous.headers["WWW-Authenticate"] == 'Basic realm="Realm"'
    assert anonymous.headers["Access-Control-Allow-Origin"] == "*"
    alice = app.get("/private", headers={"Origin": "https://a.example", "Authorization": basic("alice:secret")},
                    status=403)
    assert alice.json["errno"] == 121 and alice.headers["Vary"] == "Authorization"
