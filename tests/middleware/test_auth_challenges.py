"""The ``WWW-Authenticate`` of a 401 names the schemes the configured policies accept (PROTOCOL.md §11.4, §7.3).

Cliquet took the header from its policies (``forget()``): ``Basic realm="Realm"`` from Basic Auth, nothing from a
trusted front server's ``REMOTE_USER``.  A Basic challenge where Basic Auth is not accepted makes browsers ask for
a password that can never work.
"""
from __future__ import annotations

import base64
from typing import Any, Dict, List, Mapping, Optional

import pytest
import webtest

from wsgicliquet import Resource, ResourceApp, ShareableResource, build_pipeline
from wsgicliquet.backends import clear_backends
from wsgicliquet.environ import CHALLENGES, PRINCIPALS
from wsgicliquet.errors import unauthorized_or_forbidden
from wsgicliquet.middleware.auth import Authentication

BASIC = 'Basic realm="Realm"'


class Memo(Resource):
    schema = {"type": "object"}


class Poster(ShareableResource):
    schema = {"type": "object"}


class TokenPolicy:
    """A plugged policy announcing its own scheme."""

    name = "token"
    challenge = 'Bearer realm="Realm"'

    def __call__(self, environ: Mapping[str, Any]) -> Optional[str]:
        header = environ.get("HTTP_AUTHORIZATION", "")
        return header[len("Bearer "):] or None if header.startswith("Bearer ") else None


def api(policies: str) -> webtest.TestApp:
    clear_backends()
    settings = {"storage_url": "memory://", "permission_url": "memory://", "cache_url": "",
                "multiauth.policies": policies, "multiauth.policy.token.use": f"{__name__}:TokenPolicy",
                "userid_hmac_secret": "secret", "middleware.request_log": "off"}
    return webtest.TestApp(build_pipeline(ResourceApp([Memo, Poster], settings), settings))


def challenges(response: webtest.TestResponse) -> List[str]:
    return response.headers.getall("WWW-Authenticate")


@pytest.mark.parametrize("policies, expected", [
    pytest.param("basicauth", [BASIC], id="basicauth"),
    pytest.param("remoteuser", [], id="remoteuser-alone"),
    pytest.param("remoteuser basicauth", [BASIC], id="remoteuser-then-basicauth"),
    pytest.param("token remoteuser", ['Bearer realm="Realm"'], id="plugged-policy"),
    pytest.param("basicauth token", [BASIC, 'Bearer realm="Realm"'], id="both-schemes"),
])
@pytest.mark.parametrize("path", ["/v1/memos", "/v1/posters", "/v1/posters/00000000-0000-4000-8000-000000000000"])
def test_a_401_challenges_with_the_schemes_of_the_policies(policies: str, expected: List[str], path: str) -> None:
    response = api(policies).get(path, status=401)
    assert response.json["errno"] == 104
    assert challenges(response) == expected


@pytest.mark.parametrize("policies, expected", [("remoteuser", []), ("basicauth", [BASIC])])
def test_a_401_inside_a_batch_challenges_like_a_direct_request(policies: str, expected: List[str]) -> None:
    entry = api(policies).post_json("/v1/batch", {"requests": [{"path": "/memos"}]}).json["responses"][0]
    assert entry["status"] == 401
    assert [entry["headers"][name] for name in entry["headers"] if name.lower() == "www-authenticate"] == \
        ([", ".join(expected)] if expected else [])


def test_a_403_never_challenges() -> None:
    app = api("remoteuser basicauth")
    response = app.get("/v1/posters", extra_environ={"REMOTE_USER": "alice"}, status=403)
    assert challenges(response) == []
    credentials = base64.b64encode(b"alice:pw").decode()
    response = app.get("/v1/posters", headers={"Authorization": f"Basic {credentials}"}, status=403)
    assert challenges(response) == []


def test_views_pass_the_challenges_the_middleware_puts_in_the_environ() -> None:
    seen: Dict[str, Any] = {}

    def view(environ: Dict[str, Any], start_response: Any) -> Any:
        seen["challenges"] = environ[CHALLENGES]
        return unauthorized_or_forbidden(environ[PRINCIPALS], environ[CHALLENGES])(environ, start_response)

    remote_only = webtest.TestApp(Authentication(view, policies=["remoteuser"]))
    assert challenges(remote_only.get("/", status=401)) == [] and list(seen["challenges"]) == []
    basic = webtest.TestApp(Authentication(view, policies=["remoteuser", "basicauth"]))
    assert challenges(basic.get("/", status=401)) == [BASIC]
    # Without the middleware's list (a view used alone), the protocol's Basic challenge stays the default.
    assert unauthorized_or_forbidden(["system.Everyone"]).headers == [("WWW-Authenticate", BASIC)]
