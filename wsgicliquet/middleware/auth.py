"""Identify the user of each request and put who they are in the environ (PROTOCOL.md §11.1–11.3).

Use it above any app that needs to know the user: the resource app, a Flask or Bottle view reading
``environ["wsgicliquet.userid"]``.  It never rejects a request: an anonymous request simply has no user id, and the
resource (or view) decides, with :func:`wsgicliquet.errors.unauthorized_or_forbidden` for the 401/403 of §11.4.

Policies are tried in order; the first that returns a user id wins, and the id is prefixed with the policy's name
(``basicauth:<hex>``), so ids from different policies never collide.  Environ keys set on every request:

- ``wsgicliquet.principals``: ``system.Everyone``; when identified also ``system.Authenticated``, the prefixed id,
  the legacy ``<policy>_<id>`` form, and the user's groups from the permission backend (``user_principals``);
- ``wsgicliquet.userid`` and ``wsgicliquet.authn_type`` (the policy name), only when identified;
- ``wsgicliquet.challenges``: the ``WWW-Authenticate`` values of the policies (their ``challenge`` attribute), for
  the 401 of an anonymous request: ``Basic realm="Realm"`` when Basic Auth is accepted, as Cliquet's policies said.

A policy is any callable ``policy(environ) -> user id or None`` (:class:`Policy`).  Built in: ``basicauth``
(:class:`BasicAuth`, HMAC of the credentials, no account database) and ``remoteuser`` (:class:`RemoteUser`, a user
already authenticated by a trusted front server).
"""
from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import logging
import time
from typing import (Any, Callable, Dict, Iterable, List, Mapping, Optional, Protocol, Sequence, Tuple, Union,
                    runtime_checkable)

from wsgicliquet import environ as keys
from wsgicliquet.backends import import_string, load_backend
from wsgicliquet.permission import MAX_PRINCIPAL_LENGTH, is_storable
from wsgicliquet.pipeline import make_filter_factory
from wsgicliquet.settings import ConfigurationError

__all__ = ["Authentication", "Policy", "BasicAuth", "RemoteUser", "load_policy", "policies_from_settings",
           "EVERYONE", "AUTHENTICATED", "filter_factory"]

logger = logging.getLogger(__name__)

EVERYONE = "system.Everyone"
AUTHENTICATED = "system.Authenticated"

_GROUPS_MEMO = "wsgicliquet.auth.groups"
"""On a batch request's environ: user id -> groups, shared by its sub-requests."""


@runtime_checkable
class Policy(Protocol):
    """Identify the user of a request: return their id (without prefix), or None to let the next policy try.

    A ``name`` attribute, when present, is the default prefix of the ids it returns; a ``challenge`` attribute, the
    ``WWW-Authenticate`` value a 401 announces it with (none when absent).
    """

    def __call__(self, environ: Mapping[str, Any]) -> Optional[str]: ...


class BasicAuth:
    """``Authorization: Basic``: the user id is the HMAC-SHA256 (hex) of ``user:password`` keyed by the secret.

    Any pair is accepted (there is no account database); changing the password or the secret changes the id.
    Malformed credentials, an empty user name or another scheme identify nobody.  The HMAC key is prepared once,
    and recent headers are remembered (``cache_size`` entries) since this runs on every request.
    """

    name = "basicauth"
    challenge = 'Basic realm="Realm"'

    def __init__(self, secret: str = "", *, cache_size: Union[int, str] = 1024) -> None:
        if not secret:
            logger.warning("Setting 'userid_hmac_secret' is empty: Basic Auth user ids are unkeyed hashes of the "
                           "credentials, which anyone can compute. Set a long random secret in production.")
        self._key = hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha256)
        self._userid = functools.lru_cache(maxsize=int(cache_size))(self._hash)

    def __call__(self, environ: Mapping[str, Any]) -> Optional[str]:
        header = environ.get("HTTP_AUTHORIZATION")
        return self._userid(header) if header else None

    def _hash(self, header: str) -> Optional[str]:
        credentials = basic_credentials(header)
        if credentials is None:
            return None
        mac = self._key.copy()
        mac.update(credentials.encode("utf-8"))
        return mac.hexdigest()


def basic_credentials(header: str) -> Optional[str]:
    """``user:password`` of a Basic ``Authorization`` header, or None when malformed or the user is empty."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        decoded = raw.decode("latin-1")
    user, colon, _password = decoded.partition(":")
    return decoded if colon and user else None


class RemoteUser:
    """A user authenticated by a trusted front server, which sets ``REMOTE_USER`` (only behind such a server).

    The key is read on the request the front server forwarded, never on a batch sub-request: the server cannot
    vet the headers a batch body gives its sub-requests, so an ``HTTP_X_...`` key there would name any user.
    """

    name = "remoteuser"
    challenge = None  # the front server authenticates: a Basic challenge would ask for a password nothing checks

    def __init__(self, environ_key: str = "REMOTE_USER") -> None:
        self.environ_key = environ_key

    def __call__(self, environ: Mapping[str, Any]) -> Optional[str]:
        parent = environ.get(keys.PARENT_REQUEST)
        while isinstance(parent, Mapping):
            environ, parent = parent, parent.get(keys.PARENT_REQUEST)
        return environ.get(self.environ_key) or None


BUILTIN: Dict[str, Callable[..., Policy]] = {"basicauth": BasicAuth, "remoteuser": RemoteUser}

# Dotted names that Cliquet ini files carry in `multiauth.policy.<name>.use`, mapped to their equivalents.
COMPATIBLE: Dict[str, Callable[..., Policy]] = {
    "cliquet.authentication.BasicAuthAuthenticationPolicy": BasicAuth,
    "kinto.core.authentication.BasicAuthAuthenticationPolicy": BasicAuth,
    "pyramid.authentication.RemoteUserAuthenticationPolicy": RemoteUser,
}

PolicySpec = Union[str, Policy, Tuple[str, Policy]]


def load_policy(name: str, use: Optional[str] = None, options: Optional[Mapping[str, str]] = None,
                secret: str = "") -> Tuple[str, Policy]:
    """``(name, policy)`` for a name of ``multiauth.policies``, built from ``use`` (``module:callable``) if given.

    A class is instantiated with ``options`` (the ``multiauth.policy.<name>.<option>`` settings); a function is
    used as is.
    """
    options = dict(options or {})
    origin = f"multiauth.policy.{name}.use"
    if use is None and (":" in name):
        use, name, origin = name, name.rpartition(":")[2], "multiauth.policies"
    target: Any = COMPATIBLE.get(use or "") or (import_string(use, origin) if use else BUILTIN.get(name))
    if target is None:
        raise ConfigurationError(f"Setting 'multiauth.policies' names {name!r}, which is neither basicauth nor "
                                 f"remoteuser: set 'multiauth.policy.{name}.use = module:callable'")
    if isinstance(target, type):
        if issubclass(target, BasicAuth):
            options.setdefault("secret", secret)
        try:
            policy = target(**options)
        except TypeError as exc:
            raise ConfigurationError(f"Authentication policy {name!r} does not accept {sorted(options)}: {exc}") \
                from None
    elif options:
        raise ConfigurationError(f"Authentication policy {name!r} is a function and takes no options "
                                 f"({', '.join(sorted(options))})")
    else:
        policy = target
    if not callable(policy):
        raise ConfigurationError(f"Authentication policy {name!r} ({use}) is not callable")
    return _checked_name(name), policy


def policies_from_settings(settings: Mapping[str, Any]) -> List[Tuple[str, Policy]]:
    """The policies of ``multiauth.policies``, with their ``multiauth.policy.<name>.*`` options."""
    policies = []
    for name in settings["multiauth.policies"]:
        prefix = f"multiauth.policy.{name}.".lower()  # ini files lower-case their keys
        options = {key[len(prefix):]: value for key, value in settings.items() if key.lower().startswith(prefix)}
        use = options.pop("use", None) or None
        policies.append(load_policy(name, use, options, secret=settings["userid_hmac_secret"]))
    return policies


@functools.lru_cache(maxsize=64)
def _timer_name(policy: str) -> str:
    return f"authentication.{policy}.unauthenticated_userid"


def _storable(name: str, userid: Any) -> bool:
    """Whether every backend can store the prefixed id as a principal (it becomes the author of records).

    A trusted front server could pass a NUL character, a lone surrogate or an id of any length; such an id
    identifies nobody, rather than failing on one backend and not on another.
    """
    userid = str(userid)
    if not is_storable(userid) or len(name) + 1 + len(userid) > MAX_PRINCIPAL_LENGTH:
        logger.warning("Authentication policy %r returned an unusable user id (%d characters, NUL or lone "
                       "surrogate: %s): ignored", name, len(userid), not is_storable(userid))
        return False
    return True


def _checked_name(name: str) -> str:
    name = name.strip().lower()
    if not name or ":" in name or any(char.isspace() for char in name):
        raise ConfigurationError(f"Invalid authentication policy name {name!r}")
    return name


class Authentication:
    def __init__(self, app: Callable, *, policies: Sequence[PolicySpec] = ("basicauth",),
                 userid_hmac_secret: str = "", permission: Any = None) -> None:
        """``policies``: names (``basicauth``, ``remoteuser``, ``module:callable``), policies with a ``name``
        attribute, or ``(name, policy)`` pairs.  ``permission``: the backend giving each user's groups.
        No policy switches the middleware off."""
        self.app = app
        self.policies = [self._resolve(spec, userid_hmac_secret) for spec in policies]
        challenges = (getattr(policy, "challenge", None) for _, policy in self.policies)
        self.challenges = tuple(challenge for challenge in challenges if challenge)
        self.permission = permission
        self.enabled = bool(self.policies)

    @staticmethod
    def _resolve(spec: PolicySpec, secret: str) -> Tuple[str, Policy]:
        if isinstance(spec, str):
            return load_policy(spec, secret=secret)
        if isinstance(spec, tuple):
            name, policy = spec
            return _checked_name(name), policy
        name = getattr(spec, "name", None)
        if not isinstance(name, str) or not callable(spec):
            raise ConfigurationError(f"Authentication policy {spec!r} needs a name: pass (name, policy)")
        return _checked_name(name), spec

    @classmethod
    def from_settings(cls, app: Callable, settings: Mapping[str, Any]) -> "Authentication":
        return cls(app, policies=policies_from_settings(settings), permission=load_backend("permission", settings))

    def identify(self, environ: Mapping[str, Any]) -> Tuple[Optional[str], Optional[str]]:
        """``(policy name, user id)`` of the first policy that identifies the request, else ``(None, None)``.

        Under the StatsD middleware each policy asked is timed as ``authentication.<name>.unauthenticated_userid``
        (Cliquet's metric name, PROTOCOL.md §14).
        """
        metrics = environ.get(keys.METRICS)
        for name, policy in self.policies:
            if metrics is None:
                userid = policy(environ)
            else:
                started = time.perf_counter()
                userid = policy(environ)
                metrics.append(("ms", _timer_name(name), (time.perf_counter() - started) * 1000))
            if userid and _storable(name, userid):
                return name, userid
        return None, None

    def __call__(self, environ: Dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        if not self.enabled:
            return self.app(environ, start_response)
        name, userid = self.identify(environ)
        environ[keys.CHALLENGES] = self.challenges
        if userid is None:
            environ.pop(keys.USERID, None)
            environ.pop(keys.AUTHN_TYPE, None)
            environ[keys.PRINCIPALS] = [EVERYONE]
        else:
            prefixed = f"{name}:{userid}"
            environ[keys.USERID] = prefixed
            environ[keys.AUTHN_TYPE] = name
            environ[keys.PRINCIPALS] = [EVERYONE, AUTHENTICATED, prefixed, f"{name}_{userid}",
                                        *self._groups(prefixed, environ)]
        return self.app(environ, start_response)

    def _groups(self, userid: str, environ: Dict[str, Any]) -> List[str]:
        """The user's groups, asked once per request (once per batch, shared by its sub-requests)."""
        permission = self.permission if self.permission is not None else environ.get(keys.PERMISSION)
        if permission is None:
            return []
        parent = environ.get(keys.PARENT_REQUEST)
        if not isinstance(parent, dict):
            return sorted(permission.user_principals(userid))
        memo = parent.setdefault(_GROUPS_MEMO, {})
        groups = memo.get(userid)
        if groups is None:
            groups = memo[userid] = sorted(permission.user_principals(userid))
        return list(groups)


filter_factory = make_filter_factory(Authentication)
