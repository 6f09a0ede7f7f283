"""Stack the middlewares in the canonical order, from Python or from a PasteDeploy ``.ini``.

The canonical order, outermost first, and why:

1. ``profiler``: measures everything below it.
2. ``request_log``, ``statsd``: see the final status and the whole duration, errors and redirects included.
3. ``cors``: every response, errors included, needs its headers.
4. ``json_errors``: turns exceptions and the wrapped app's non-JSON errors into the uniform body.
5. ``sentry``: inside the error converter, so it sees exceptions before they become responses.
6. ``version_prefix``: ``/vN`` routing, redirects, errno 116.  Everything below is built once per version:
7. ``backoff``, ``end_of_life``: per version, so a deprecated ``/v1`` and a current ``/v2`` coexist; backoff
   outermost, so that even the 410 of a retired version carries ``Backoff``.
8. ``heartbeat``: ``__heartbeat__``, ``__lbheartbeat__``, ``__version__`` (also at the root, Dockerflow).
9. ``transaction``: one storage transaction per request; a batch is one transaction.
10. ``batch``: sub-requests run through every layer below, so each is authenticated and handled as if alone.
11. ``json_errors`` again: so that each batch sub-response (a Flask HTML 404, an exception) is already in the
    JSON error format when the batch embeds it, or aborts the batch as the JSON 500 it would be alone.
12. ``auth``: puts the user id and principals in the environ.
13. ``readonly``: below the batch, so ``POST /batch`` works and its write sub-requests get 405.
14. ``hello``: below auth, so it can show the authenticated user.
15. ``backends``: puts the storage, cache and permission backends in the environ for any app.
16. the app(s).

Any middleware is switched off with the setting ``middleware.<name> = off`` or replaced with
``middleware.<name> = package.module:Class`` (a class with ``from_settings(app, settings)``).  For full control,
pass the stack as data: ``build_pipeline(app, stack=[Use(Cors, origins=["*"]), Use(Backoff, backoff=30)])``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from wsgicliquet.backends import import_string
from wsgicliquet.settings import ConfigurationError, Settings, api_prefix, load_settings
from wsgicliquet.types import WSGIApp

__all__ = ["Use", "build_pipeline", "CANONICAL", "OUTER", "PER_VERSION", "make_filter_factory",
           "mount", "mount_factory", "versions_factory", "wsgi_factory", "api_factory", "pipeline_filter_factory", "describe"]


OUTER: List[Tuple[str, str]] = [
    ("profiler", "wsgicliquet.middleware.profiler:Profiler"),
    ("request_log", "wsgicliquet.middleware.request_log:RequestLog"),
    ("statsd", "wsgicliquet.middleware.statsd:StatsdMetrics"),
    ("cors", "wsgicliquet.middleware.cors:Cors"),
    ("json_errors", "wsgicliquet.middleware.json_errors:JsonErrors"),
    ("sentry", "wsgicliquet.middleware.sentry:Sentry"),
]
VERSION_PREFIX = ("version_prefix", "wsgicliquet.middleware.version_prefix:VersionPrefix")
PER_VERSION: List[Tuple[str, str]] = [
    ("backoff", "wsgicliquet.middleware.backoff:Backoff"),
    ("end_of_life", "wsgicliquet.middleware.end_of_life:EndOfLife"),
    ("heartbeat", "wsgicliquet.middleware.heartbeat:Heartbeat"),
    ("transaction", "wsgicliquet.middleware.transaction:Transaction"),
    ("batch", "wsgicliquet.middleware.batch:Batch"),
    ("json_errors", "wsgicliquet.middleware.json_errors:JsonErrors"),
    ("auth", "wsgicliquet.middleware.auth:Authentication"),
    ("readonly", "wsgicliquet.middleware.readonly:ReadOnly"),
    ("hello", "wsgicliquet.middleware.hello:Hello"),
    ("backends", "wsgicliquet.middleware.backends:Backends"),
]
CANONICAL: List[Tuple[str, str]] = OUTER + [VERSION_PREFIX] + PER_VERSION
REDIRECT_LAYERS = [layer for layer in PER_VERSION if layer[0] in ("backoff", "end_of_life")]
"""The layers of a version that the version prefix's redirects into it go through (§9.1, §10)."""


@dataclass
class Use:
    """One layer of an explicit stack: a middleware class and its constructor options."""

    middleware: Any
    options: Dict[str, Any] = field(default_factory=dict)

    def __init__(self, middleware: Any, **options: Any) -> None:
        self.middleware = import_string(middleware) if isinstance(middleware, str) else middleware
        self.options = options

    def wrap(self, app: WSGIApp) -> WSGIApp:
        return self.middleware(app, **self.options)


def _middleware_class(name: str, default: str, settings: Mapping[str, Any]) -> Optional[Any]:
    choice = str(settings.get(f"middleware.{name}", "") or "").strip()
    if choice.lower() in ("off", "false", "no", "none"):
        return None
    if not choice or choice.lower() in ("on", "default"):
        return import_string(default)
    cls = import_string(choice, f"middleware.{name}")
    if not callable(getattr(cls, "from_settings", None)):
        raise ConfigurationError(f"Setting 'middleware.{name}' has an invalid value {choice!r}: "
                                 "expected off, or a class with from_settings(app, settings)")
    return cls


def _check_layer_names(settings: Mapping[str, Any]) -> None:
    """A ``middleware.<name>`` setting must name a layer: a typo would otherwise leave the layer silently on."""
    names = {name for name, _ in CANONICAL}
    for key in settings:
        if key.startswith("middleware.") and key[len("middleware."):] not in names:
            raise ConfigurationError(f"Setting {key!r} names no layer of the pipeline; the layers are "
                                     f"{', '.join(name for name, _ in CANONICAL)}")


def _wrap(app: WSGIApp, layers: Sequence[Tuple[str, str]], settings: Settings) -> WSGIApp:
    for name, default in reversed(layers):
        cls = _middleware_class(name, default, settings)
        if cls is not None:
            app = cls.from_settings(app, settings)
    return app


VersionSpec = Union[WSGIApp, Tuple[WSGIApp, Mapping[str, Any]]]


def build_pipeline(app: WSGIApp, settings: Optional[Mapping[str, Any]] = None, *,
                   versions: Optional[Mapping[str, VersionSpec]] = None,
                   stack: Optional[Sequence[Use]] = None, **overrides: Any) -> WSGIApp:
    """Wrap ``app`` with the middlewares, outermost first in the canonical order.

    Without ``versions``, ``app`` is the API itself, served under the prefix of ``http_api_version``.  With
    ``versions`` (``{"/v1": v1_app, "/v2": (v2_app, {"eos": "2027-01-01"})}``), each version app gets its own
    per-version stack (settings overridden per version) and ``app`` keeps serving every other path.
    With ``stack``, exactly those layers are applied, in that order, and settings are not consulted.
    """
    if stack is not None:
        for layer in reversed(list(stack)):
            app = layer.wrap(app)
        return app
    settings = load_settings(settings or {}, **overrides)
    _check_layer_names(settings)
    layers: Dict[str, Callable[[WSGIApp], WSGIApp]] = {}
    if versions is None:
        version_apps = {api_prefix(settings): _wrap(app, PER_VERSION, settings)}
        layers[api_prefix(settings)] = lambda inner: _wrap(inner, REDIRECT_LAYERS, settings)
        fallback: Optional[WSGIApp] = None
    else:
        version_apps = {}
        for prefix, spec in versions.items():
            version_app, version_settings = (spec if isinstance(spec, tuple) else (spec, {}))
            merged = load_settings({**settings, **version_settings}) if version_settings else settings
            _check_layer_names(merged)
            version_apps["/" + prefix.strip("/")] = _wrap(version_app, PER_VERSION, merged)
            layers["/" + prefix.strip("/")] = lambda inner, merged=merged: _wrap(inner, REDIRECT_LAYERS, merged)
        fallback = app
    routed: WSGIApp
    cls = _middleware_class(*VERSION_PREFIX, settings)
    if cls is None:
        if len(version_apps) != 1 or fallback is not None:
            raise ConfigurationError("Setting 'middleware.version_prefix' cannot be off with several apps")
        routed = next(iter(version_apps.values()))
    else:
        # A replacement class without version_layers: its redirects skip the versions' layers.
        extra = {"version_layers": layers} if "version_layers" in inspect.signature(cls.from_settings).parameters \
            else {}
        routed = cls.from_settings(fallback, settings, versions=version_apps, **extra)
    return _wrap(routed, OUTER, settings)


def make_filter_factory(cls: Any) -> Callable[..., Callable[[WSGIApp], WSGIApp]]:
    """A PasteDeploy ``filter_factory`` for a middleware class with ``from_settings(app, settings)``.

    Settings are the ``[DEFAULT]`` section (``global_conf``) overridden by the filter's own section.  The filter of
    a canonical layer obeys ``middleware.<name>`` as :func:`build_pipeline` does (``off`` leaves it out, a dotted
    path replaces it), so that an environment switch (``WSGICLIQUET_MIDDLEWARE_PROFILER=off``) works on an
    explicit ``[pipeline:main]`` too, instead of being ignored.
    """
    default = f"{cls.__module__}:{cls.__qualname__}"
    name = next((layer for layer, path in CANONICAL if path == default), None)

    def filter_factory(global_conf: Mapping[str, Any], **local_conf: Any) -> Callable[[WSGIApp], WSGIApp]:
        settings = load_settings({**global_conf, **local_conf})
        chosen = cls
        if name is not None:
            _check_layer_names(settings)
            chosen = _middleware_class(name, default, settings)
            if chosen is None:
                return lambda app: app
        return lambda app: chosen.from_settings(app, settings)

    filter_factory.__doc__ = f"PasteDeploy filter factory of :class:`{cls.__module__}.{cls.__name__}`."
    return filter_factory


def pipeline_filter_factory(global_conf: Mapping[str, Any], **local_conf: Any) -> Callable[[WSGIApp], WSGIApp]:
    """``egg:wsgicliquet#pipeline``: the whole canonical stack as one filter; ``api`` names mounted apps.

    ``api = /v1 = resources`` is not possible in one line of ini, so the composite ``mount`` does the mounting
    and this filter takes the settings only.
    """
    settings = load_settings({**global_conf, **local_conf})
    return lambda app: build_pipeline(app, settings)


def wsgi_factory(global_conf: Mapping[str, Any], **local_conf: str) -> WSGIApp:
    """PasteDeploy ``egg:wsgicliquet#wsgi``: any WSGI app by dotted path (``app = mysite.app:app``).

    So an ini can mount an existing Flask, Bottle or Pyramid app without writing a factory for it.
    """
    path = local_conf.get("app") or global_conf.get("app")
    if not path:
        raise ConfigurationError("egg:wsgicliquet#wsgi needs 'app = package.module:attribute'")
    app = import_string(path, "app")
    if not callable(app):
        raise ConfigurationError(f"Setting 'app': {path!r} is not a WSGI application")
    return app


def mount(apps: Mapping[str, WSGIApp], default: Optional[WSGIApp] = None) -> WSGIApp:
    """Serve each app under its prefix (Werkzeug's dispatcher); ``default`` serves the rest (404 without)."""
    from werkzeug.exceptions import NotFound
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    return DispatcherMiddleware(default or NotFound(), {"/" + k.strip("/"): v for k, v in apps.items()})


def mount_factory(loader: Any, global_conf: Mapping[str, Any], **local_conf: str) -> WSGIApp:
    """PasteDeploy composite ``egg:wsgicliquet#mount``: ``/v1 = resources`` mounts, ``/ = site`` the default."""
    default, apps, _settings = _composite_apps(loader, global_conf, local_conf)
    return mount(apps, default)


def _composite_apps(loader: Any, global_conf: Mapping[str, Any], local_conf: Mapping[str, str]
                    ) -> Tuple[Optional[WSGIApp], Dict[str, WSGIApp], Dict[str, Any]]:
    """Split a composite section into its default app (``/``), its prefixed apps (``/v1``) and settings."""
    default: Optional[WSGIApp] = None
    apps: Dict[str, WSGIApp] = {}
    options: Dict[str, Any] = {}
    for key, value in local_conf.items():
        if not key.startswith("/"):
            options[key] = value
        elif key.strip() == "/":
            default = loader.get_app(value.strip(), global_conf=global_conf)
        else:
            apps["/" + key.strip("/ ")] = loader.get_app(value.strip(), global_conf=global_conf)
    return default, apps, {**global_conf, **options}


def versions_factory(loader: Any, global_conf: Mapping[str, Any], **local_conf: str) -> WSGIApp:
    """PasteDeploy composite ``egg:wsgicliquet#versions``: the version prefix router alone.

    ``/v1 = v1stack`` lines name each version's app (usually a ``[pipeline:]`` of the per-version layers);
    ``/ = site`` names the app serving every other path (without it, unprefixed paths redirect).
    """
    default, apps, raw = _composite_apps(loader, global_conf, local_conf)
    settings = load_settings(raw)
    return import_string(VERSION_PREFIX[1]).from_settings(default, settings, versions=apps)


def api_factory(loader: Any, global_conf: Mapping[str, Any], **local_conf: str) -> WSGIApp:
    """PasteDeploy composite ``egg:wsgicliquet#api``: :func:`build_pipeline` from an ini in one section.

    ``/v1 = resources`` lines name the version apps, ``/ = site`` the wrapped framework app (optional: without it
    the single version app is the whole service).
    """
    default, apps, raw = _composite_apps(loader, global_conf, local_conf)
    settings = load_settings(raw)
    if default is None and len(apps) == 1:
        return build_pipeline(next(iter(apps.values())), settings)
    if default is None:
        raise ConfigurationError("egg:wsgicliquet#api needs '/ = <app>' when it mounts several versions")
    return build_pipeline(default, settings, versions=apps)


def describe(app: Any, indent: str = "") -> List[str]:
    """The chain of middlewares from ``app`` inwards, one line each (``wsgicliquet pipeline``)."""
    lines: List[str] = []
    seen = set()
    while app is not None and id(app) not in seen:
        seen.add(id(app))
        label = getattr(app, "pipeline_name", None) or type(app).__name__
        if type(app).__name__ == "function":
            label = getattr(app, "__qualname__", repr(app))
        lines.append(f"{indent}{label} ({type(app).__module__}.{type(app).__qualname__})")
        versions = getattr(app, "versions", None)
        if isinstance(versions, Mapping):
            for prefix, version_app in versions.items():
                lines.append(f"{indent}  {prefix}:")
                lines.extend(describe(version_app, indent + "    "))
        mounts = getattr(app, "mounts", None)
        if isinstance(mounts, Mapping):
            for prefix, mounted in mounts.items():
                lines.append(f"{indent}  {prefix}:")
                lines.extend(describe(mounted, indent + "    "))
        app = getattr(app, "app", None)
        if app is not None and (callable(getattr(app, "__call__", None))) is False:
            break
    return lines
