"""Report exceptions to Sentry through sentry-sdk's WSGI middleware, with the user id and request id attached.

Place it inside the JSON error converter (as ``build_pipeline`` does): it must see exceptions before they become
500 responses.  sentry-sdk's framework integrations stay on, since Flask and Bottle turn exceptions into their own
500 pages before any middleware sees them; their integrations capture them in the view.  An exception that a JSON
error converter below answers (the one inside the version) is reported by it through
``environ["wsgicliquet.report_exception"]``, which this middleware sets.  Protocol errors raised as
:class:`~wsgicliquet.errors.HTTPError` below 500 (404, 412...) are answers, not bugs, and are not reported.

Settings: ``sentry_dsn`` (unset: pass-through), ``sentry_env`` (environment), ``project_version`` (release).
sentry-sdk is global to the process: it is initialised once, when the first middleware is built (again only if the
options change).  Needs ``pip install 'wsgicliquet[monitoring]'``.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Tuple

from wsgicliquet import environ as keys
from wsgicliquet.backends import missing_extra
from wsgicliquet.errors import HTTPError
from wsgicliquet.pipeline import make_filter_factory
from wsgicliquet.settings import ConfigurationError
from wsgicliquet.types import StartResponse

__all__ = ["Sentry", "init_sentry", "filter_factory"]


_init_lock = threading.Lock()
_initialised: Optional[Tuple[Tuple[Any, ...], Tuple[Any, ...]]] = None


def init_sentry(dsn: str, *, environment: Optional[str] = None, release: Optional[str] = None,
                 **options: Any) -> None:
    """``sentry_sdk.init`` once per process; default and auto-enabling integrations on.

    A later call with the same DSN, environment and release and no other options keeps the first initialisation
    (and the options it was given); anything else initialises again (sentry-sdk is global: the last one wins).
    """
    global _initialised
    try:
        import sentry_sdk
    except ImportError:  # pragma: no cover - depends on the installation
        raise missing_extra("monitoring", "sentry-sdk") from None
    from sentry_sdk.utils import BadDsn

    base = (dsn, environment, release)
    extra = tuple(sorted((name, id(value)) for name, value in options.items()))
    with _init_lock:
        if _initialised is not None and _initialised[0] == base and (not extra or _initialised[1] == extra) \
                and sentry_sdk.get_client().is_active():
            return
        try:
            sentry_sdk.init(dsn=dsn, environment=environment, release=release, default_integrations=True,
                            auto_enabling_integrations=True, **options)
        except (BadDsn, ValueError) as exc:  # a bad port or an unclosed IPv6 bracket fails in urlsplit
            raise ConfigurationError(f"Setting 'sentry_dsn' has an invalid value {dsn!r}: {exc}") from None
        _initialised = (base, extra)


class Sentry:
    """sentry-sdk's WSGI middleware around ``app``, tagging events with the user and request ids."""

    def __init__(self, app: Callable, *, dsn: Optional[str] = None, environment: Optional[str] = None,
                 release: Optional[str] = None, **options: Any) -> None:
        self.app = app
        self.wrapped: Optional[Callable] = None
        if dsn:
            from sentry_sdk.integrations.wsgi import SentryWsgiMiddleware

            init_sentry(dsn, environment=environment, release=release, **options)
            self.wrapped = SentryWsgiMiddleware(self._scoped)

    @classmethod
    def from_settings(cls, app: Callable, settings: Mapping[str, Any]) -> "Sentry":
        return cls(app, dsn=settings.get("sentry_dsn"), environment=settings.get("sentry_env"),
                   release=str(settings.get("project_version") or "") or None)

    def __call__(self, environ: Dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if self.wrapped is None:
            return self.app(environ, start_response)
        return self.wrapped(environ, start_response)

    def _scoped(self, environ: Dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Runs inside the request's isolation scope: its event processor reads the environ when an event is sent,
        so the user id set by the authentication layer further down is known."""
        import sentry_sdk

        sentry_sdk.get_isolation_scope().add_event_processor(
            lambda event, hint: _enrich(event, hint, environ))
        environ[keys.REPORT_EXCEPTION] = _report
        return self.app(environ, start_response)


def _report(exc: BaseException, environ: Mapping[str, Any]) -> None:
    """Capture an exception that a layer below answers (the JSON error converter inside the version) instead of
    letting it through; ``environ`` is that request's (a batch sub-request has its own user).  sentry-sdk's dedupe
    drops a second report of the same exception."""
    import sentry_sdk

    with sentry_sdk.new_scope() as scope:
        scope.add_event_processor(lambda event, hint: _enrich(event, hint, environ))
        sentry_sdk.capture_exception(exc)


def _enrich(event: Dict[str, Any], hint: Mapping[str, Any], environ: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    exc_info = hint.get("exc_info") if hint else None
    if exc_info and isinstance(exc_info[1], HTTPError) and exc_info[1].code < 500:
        return None
    request_id = environ.get(keys.REQUEST_ID) or environ.get("HTTP_X_REQUEST_ID")
    if request_id:
        event.setdefault("tags", {})["request_id"] = str(request_id)
    userid = environ.get(keys.USERID)
    if userid:
        user = event.get("user") if isinstance(event.get("user"), dict) else {}
        user["id"] = str(userid)
        event["user"] = user
        authn_type = environ.get(keys.AUTHN_TYPE)
        if authn_type:
            event.setdefault("tags", {})["authn_type"] = str(authn_type)
    return event


filter_factory = make_filter_factory(Sentry)
