"""One flat settings namespace, with Cliquet's names and defaults.

Every setting the toolkit reads is declared once in :data:`SETTINGS`, with its default, its type and a line of
documentation.  Values arrive as strings (from an ``.ini`` file or the environment) or as Python values (from
``build_pipeline()``); :func:`load_settings` coerces them once, at start-up, by the type of the declaration, and
applies the environment overrides.  A value that does not coerce stops start-up with a :class:`ConfigurationError`
naming the setting and the bad value.  Nothing downstream reads ``os.environ``.

Environment rule: a setting ``name`` is overridden by ``WSGICLIQUET_NAME`` (upper case, ``.`` and ``-`` become
``_``), and, when ``project_name`` is set, by ``<PROJECT_NAME>_NAME``, which wins over the former.

Names that follow a pattern (``collection_<resource>_<method>_enabled``, ``<resource>_<permission>_principals``,
``<resource>_cache_expires_seconds``, ``multiauth.policy.<name>.<option>``, ``middleware.<name>``) are accepted and
typed by :data:`PATTERNS`.  Any other unknown name is kept as a string, so that applications can carry their own.
"""
from __future__ import annotations

import datetime
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple
from urllib.parse import urlsplit

__all__ = ["Setting", "Settings", "SETTINGS", "ConfigurationError", "load_settings", "coerce", "env_names"]


class ConfigurationError(ValueError):
    """A setting has a value that cannot be used; raised at start-up, never per request."""


def _as_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "yes", "on", "1"):
        return True
    if lowered in ("false", "no", "off", "0", ""):
        return False
    raise ValueError("not a boolean (use true/false, yes/no, on/off)")


def _as_list(value: str) -> List[str]:
    return [item for item in re.split(r"[\s,]+", value.strip()) if item]


def _as_optional_int(value: str) -> Optional[int]:
    value = value.strip()
    if value.lower() in ("", "none", "null"):
        return None
    return int(value)


def _as_optional_str(value: str) -> Optional[str]:
    value = value.strip()
    return value or None


def _as_date(value: str) -> Optional[datetime.date]:
    value = value.strip()
    if not value or value.lower() in ("none", "null"):
        return None
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        return datetime.datetime.fromisoformat(value).date()


def _as_float(value: str) -> float:
    number = float(value.strip())
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return number


def _as_optional_float(value: str) -> Optional[float]:
    value = value.strip()
    if value.lower() in ("", "none", "null"):
        return None
    return _as_float(value)


_PARSERS: Dict[str, Callable[[str], Any]] = {
    "str": lambda value: value,
    "opt_str": _as_optional_str,
    "bool": _as_bool,
    "int": lambda value: int(value.strip()),
    "opt_int": _as_optional_int,
    "float": _as_float,
    "opt_float": _as_optional_float,
    "list": _as_list,
    "date": _as_date,
}


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    type: str
    doc: str


def _table(*rows: Tuple[str, Any, str, str]) -> Dict[str, Setting]:
    return {name: Setting(name, default, kind, doc) for name, default, kind, doc in rows}


SETTINGS: Dict[str, Setting] = _table(
    # Project
    ("project_name", "", "str", "Service name: hello, log `Logger`, StatsD prefix, environment prefix."),
    ("project_version", "1.0.0", "str", "Version string shown by hello; gives `http_api_version` (so `/v1`) when unset."),
    ("http_api_version", "", "str", "API version `MAJOR.MINOR`; MAJOR gives the `/vN` prefix. Default: from project_version."),
    ("project_docs", "", "str", "Documentation URL (hello, default `Alert` url)."),
    ("http_host", None, "opt_str", "Force the host[:port] of generated URLs (hello url, Next-Page, redirects)."),
    ("http_scheme", None, "opt_str", "Force the scheme of generated URLs (`https`)."),
    # Backends
    ("storage_url", "memory://", "str", "Storage backend URL: `memory://`, `redis://host:6379/0`, `postgresql://host/db`."),
    ("storage_backend", "", "str", "Dotted path of a storage class, overriding the one the URL scheme selects."),
    ("storage_pool_size", 25, "int", "Connection pool size of the storage backend."),
    ("storage_pool_timeout", 30.0, "float", "PostgreSQL: seconds a request waits for a free storage connection before a 503 (Redis: 5 s)."),
    ("storage_statement_timeout", 10.0, "float", "PostgreSQL: longest a storage statement may run (lock waits included) before a 503; 0 for no limit."),
    ("storage_response_timeout", None, "opt_float", "PostgreSQL: seconds the client waits for a server that does not answer at all (stopped, paused) before a 503; default the statement timeout + 5 s (none when that is 0); 0 for no limit."),
    ("storage_max_request_size", 8 * 1024 * 1024, "int", "Largest request body accepted by the resource app (bytes); larger is 413."),
    ("cache_url", "memory://", "str", "Cache backend URL (same schemes as storage); empty for no cache."),
    ("cache_backend", "", "str", "Dotted path of a cache class, overriding the URL scheme."),
    ("cache_pool_size", 25, "int", "Connection pool size of the cache backend."),
    ("cache_pool_timeout", 30.0, "float", "PostgreSQL: seconds a request waits for a free cache connection before a 503 (Redis: 5 s)."),
    ("cache_statement_timeout", 10.0, "float", "PostgreSQL: longest a cache statement may run (lock waits included) before a 503; 0 for no limit."),
    ("cache_response_timeout", None, "opt_float", "PostgreSQL: seconds the client waits for a server that does not answer at all (stopped, paused) before a 503; default the statement timeout + 5 s (none when that is 0); 0 for no limit."),
    ("cache_prefix", "", "str", "Prefix added to every cache key."),
    ("permission_url", "memory://", "str", "Permission backend URL (same schemes as storage); empty for none."),
    ("permission_backend", "", "str", "Dotted path of a permission class, overriding the URL scheme."),
    ("permission_pool_size", 25, "int", "Connection pool size of the permission backend."),
    ("permission_pool_timeout", 30.0, "float", "PostgreSQL: seconds a request waits for a free permission connection before a 503 (Redis: 5 s)."),
    ("permission_statement_timeout", 10.0, "float", "PostgreSQL: longest a permission statement may run (lock waits included) before a 503; 0 for no limit."),
    ("permission_response_timeout", None, "opt_float", "PostgreSQL: seconds the client waits for a server that does not answer at all (stopped, paused) before a 503; default the statement timeout + 5 s (none when that is 0); 0 for no limit."),
    ("redis_key_prefix", "wsgicliquet:", "str", "Prefix of every key the Redis backends write (`<kind>_key_prefix` overrides it per backend)."),
    ("transaction_per_request", True, "bool", "One storage transaction per request (and per batch)."),
    # Resources
    ("id_generator", "wsgicliquet.resource.generators:UUID4", "str", "Record id generator (dotted path)."),
    ("paginate_by", None, "opt_int", "Forced maximum page size of collection listings."),
    ("resources", [], "list", "Resource classes served by the resource app (dotted paths `module:Class`)."),
    ("resources_fallback", "", "str", "WSGI app (dotted path `module:app`) serving the paths no resource matches."),
    ("last_modified_margin_ms", 5000, "int", "How far in the future a client-supplied `last_modified` may be (ms)."),
    ("event_listeners", [], "list", "Names of the listeners of resource events, each configured by `event_listeners.<name>.use` (and `.actions`, `.resources`, its own options)."),
    # Protocol middlewares
    ("version_prefix_redirect_enabled", True, "bool", "307 redirect of unprefixed URLs to the current version."),
    ("trailing_slash_redirect_enabled", True, "bool", "307 redirect of unmatched URLs ending with `/`."),
    ("json_errors_paths", [], "list", "Path prefixes whose non-JSON errors are rewritten (default: the API prefixes)."),
    ("error_info_link", "https://github.com/mozilla-services/cliquet/issues/", "str", "`info` of 500 errors."),
    ("batch_max_requests", 25, "opt_int", "Most sub-requests in one batch (0 or empty: no limit)."),
    ("batch_max_body_size", 10 * 1024 * 1024, "int", "Largest batch request body (bytes); larger is 413."),
    ("readonly", False, "bool", "Read-only mode: writes get 405."),
    ("backoff", None, "opt_int", "Value of the `Backoff` header (seconds); unset: no header."),
    ("backoff_percentage", None, "opt_int", "Percentage of responses that carry `Backoff` (default all)."),
    ("retry_after_seconds", 30, "int", "Value of `Retry-After` on 503 and 429 responses."),
    ("eos", None, "date", "End of service date (ISO `YYYY-MM-DD`)."),
    ("eos_message", None, "opt_str", "`message` of the `Alert` header."),
    ("eos_url", None, "opt_str", "`url` of the `Alert` header (default: project_docs)."),
    ("cors_origins", ["*"], "list", "Allowed CORS origins, whitespace separated, shell wildcards allowed."),
    ("cors_max_age_seconds", 3600, "opt_int", "`Access-Control-Max-Age` of preflight answers (0/empty: none)."),
    ("vary", ["Authorization"], "list", "Request headers listed in `Vary`."),
    ("heartbeat_timeout_seconds", 10.0, "float", "Time given to the heartbeat checks, run concurrently."),
    ("version_json_path", "version.json", "str", "File served by `__version__`."),
    # Authentication
    ("userid_hmac_secret", "", "str", "HMAC key of Basic Auth user ids. Set it in production."),
    ("multiauth.policies", ["basicauth"], "list", "Authentication policies, in order: basicauth, remoteuser, or a dotted callable."),
    # Observability
    ("logging_renderer", "json", "str", "Request log renderer: `json` (mozlog) or `classic` (one readable line)."),
    ("statsd_url", None, "opt_str", "StatsD server, `udp://host:8125`; unset: no metrics."),
    ("statsd_prefix", "wsgicliquet", "str", "StatsD prefix (project_name wins when set)."),
    ("statsd_flush_interval_seconds", 1.0, "float",
     "Metrics are aggregated and sent at this interval; 0: one packet per response."),
    ("sentry_dsn", None, "opt_str", "Sentry DSN; unset: no Sentry."),
    ("sentry_env", None, "opt_str", "Sentry environment."),
    ("profiler_enabled", False, "bool", "Profile each request with Werkzeug's profiler."),
    ("profiler_dir", "/tmp", "str", "Where profile files are written."),
)

# Settings whose names follow a pattern: (regular expression, type, doc).
PATTERNS: List[Tuple[re.Pattern, str, str]] = [
    (re.compile(r"^(collection|record)_\w+_(get|post|put|patch|delete)_enabled$"), "bool",
     "Switch one resource endpoint off (405)."),
    (re.compile(r"^\w+_(read|write|create)_principals$"), "list",
     "Principals granted a permission on a shareable resource, bypassing the permission backend."),
    (re.compile(r"^\w+_cache_expires_seconds$"), "opt_int", "Cache lifetime of anonymous GETs of a resource."),
    (re.compile(r"^middleware\.\w+$"), "str",
     "`off` to leave a layer out of build_pipeline(), or `module:Class` to replace it; an unknown layer is an error."),
    (re.compile(r"^multiauth\.policy\.\w+\..+$"), "str", "Option of an authentication policy."),
    (re.compile(r"^event_listeners\.\w+\.(actions|resources)$"), "list",
     "Actions (`create update delete read`, default the first three) and resource names a listener receives."),
    (re.compile(r"^event_listeners\.\w+\.use$"), "str",
     "Module with `load_from_config(settings, prefix)` (`wsgicliquet.listeners.redis`), or `module:function`."),
]


class Settings(dict):
    """A plain dict of coerced settings, as :func:`load_settings` returns them: its type tells that defaults and the
    environment are applied already, so loading it again (each layer's ``from_settings``) costs nothing."""


def env_name(name: str) -> str:
    return re.sub(r"[.\-]", "_", name).upper()


def env_names(name: str, project_name: str = "") -> List[str]:
    """Environment variables that override ``name``, weakest first."""
    names = ["WSGICLIQUET_" + env_name(name)]
    if project_name:
        names.append(env_name(project_name) + "_" + env_name(name))
    return names


def _kind_of(name: str) -> Optional[str]:
    declared = SETTINGS.get(name)
    if declared is not None:
        return declared.type
    for pattern, kind, _doc in PATTERNS:
        if pattern.match(name):
            return kind
    return None


def coerce(name: str, value: Any) -> Any:
    """Coerce ``value`` to the type of setting ``name``; strings are parsed, typed values checked."""
    kind = _kind_of(name)
    if kind is None:
        return value
    if isinstance(value, str):
        try:
            return _PARSERS[kind](value)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"Setting {name!r} has an invalid value {value!r}: {exc}") from None
    if value is None and (kind.startswith("opt_") or kind in ("date", "str")):
        return None if kind != "str" else ""
    if kind == "bool" and not isinstance(value, bool):
        raise ConfigurationError(f"Setting {name!r} has an invalid value {value!r}: not a boolean")
    if kind in ("int", "opt_int") and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigurationError(f"Setting {name!r} has an invalid value {value!r}: not an integer")
    if kind in ("float", "opt_float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigurationError(f"Setting {name!r} has an invalid value {value!r}: not a finite number")
        return float(value)
    if kind == "list":
        if isinstance(value, (list, tuple, set)):
            return [str(item) for item in value]
        raise ConfigurationError(f"Setting {name!r} has an invalid value {value!r}: not a list")
    if kind == "date" and not isinstance(value, datetime.date):
        raise ConfigurationError(f"Setting {name!r} has an invalid value {value!r}: not a date")
    return value


def _coerce_variable(name: str, variable: str, value: str) -> Any:
    """:func:`coerce` for a value from the environment: the error also names the variable, which the ini lacks."""
    try:
        return coerce(name, value)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{exc} (from the environment variable {variable})") from None


_PREFIXES = ("wsgicliquet.", "cliquet.")


def _normalize(raw: Mapping[str, Any], project_name: str) -> Dict[str, Any]:
    """Strip the ``wsgicliquet.``, ``cliquet.`` and ``<project>.`` spellings; conflicting spellings are an error."""
    prefixes = _PREFIXES + ((project_name + ".",) if project_name else ())
    result: Dict[str, Any] = {}
    origin: Dict[str, str] = {}
    for key, value in raw.items():
        if key in ("here", "__file__"):
            continue
        name = key
        for prefix in prefixes:
            if key.startswith(prefix):
                name = key[len(prefix):]
                break
        if name in result and result[name] != value and coerce(name, result[name]) != coerce(name, value):
            # Compared once coerced: ``backoff = "5"`` from an ini and ``backoff=5`` from Python agree.
            raise ConfigurationError(f"Settings {origin[name]!r} and {key!r} are in conflict.")
        result[name] = value
        origin[name] = key
    return result


def load_settings(raw: Optional[Mapping[str, Any]] = None, *, environ: Optional[Mapping[str, str]] = None,
                  **overrides: Any) -> Settings:
    """Defaults, then ``raw`` (ini or Python values), then ``overrides``, then the environment; all coerced.

    ``environ`` defaults to ``os.environ``; pass ``{}`` to ignore the process environment (tests).
    """
    if environ is None:
        environ = os.environ
    if isinstance(raw, Settings) and not overrides and environ is os.environ:
        return raw  # already loaded: never coerce or read the environment twice
    given: Dict[str, Any] = dict(raw or {})
    given.update(overrides)
    # Read first (§16.1), whatever its spelling, since it names the ``<project>.`` prefix of the other keys.
    project_name = environ.get("WSGICLIQUET_PROJECT_NAME", str(
        next((given[key] for key in ("project_name", *(prefix + "project_name" for prefix in _PREFIXES))
              if given.get(key)), "")))
    merged = _normalize(given, project_name)

    settings = Settings((name, setting.default) for name, setting in SETTINGS.items())
    for name, value in merged.items():
        settings[name] = coerce(name, value)

    # Environment overrides: every declared setting, and every name given explicitly.
    for name in set(SETTINGS) | set(merged):
        for variable in env_names(name, project_name):
            if variable in environ:
                settings[name] = _coerce_variable(name, variable, environ[variable])
    # ``middleware.<layer>`` names are open-ended but unambiguous: WSGICLIQUET_MIDDLEWARE_REQUEST_LOG=off switches
    # ``middleware.request_log`` off even when the ini does not mention it (a container sets only the environment).
    for prefix in env_names("middleware_", project_name):
        for variable, value in environ.items():
            if variable.startswith(prefix) and len(variable) > len(prefix):
                name = "middleware." + variable[len(prefix):].lower()
                settings[name] = _coerce_variable(name, variable, value)

    # Pattern names of resources (``collection_bookmark_delete_enabled``, ``bookmark_read_principals``...) are
    # spelled with underscores only, so a variable names one unambiguously even when the ini does not mention it.
    for prefix in env_names("", project_name):  # weakest first
        for variable, value in environ.items():
            if variable.startswith(prefix) and len(variable) > len(prefix):
                name = variable[len(prefix):].lower()
                if name not in SETTINGS and name not in merged and _kind_of(name) is not None:
                    settings[name] = _coerce_variable(name, variable, value)

    # Options of the named authentication policies and event listeners (``multiauth.policy.<name>.<option>``,
    # ``event_listeners.<name>.<option>``): the names come from their list setting, so a variable names one option
    # unambiguously even when the ini does not mention it.
    for list_name, key_prefix in (("multiauth.policies", "multiauth.policy."), ("event_listeners", "event_listeners.")):
        for name in settings.get(list_name) or ():
            if not re.fullmatch(r"\w+", str(name)):  # a dotted callable has no options of its own
                continue
            base = f"{key_prefix}{name}."
            for prefix in env_names(base, project_name):  # weakest first
                for variable, value in environ.items():
                    if variable.startswith(prefix) and len(variable) > len(prefix):
                        key = base + variable[len(prefix):].lower()
                        if key not in merged:
                            settings[key] = _coerce_variable(key, variable, value)

    if not settings["http_api_version"]:
        version = str(settings["project_version"]).strip()
        parts = version.split(".")
        if not parts[0].isdigit():
            # The API version (so the /vN prefix) comes from it: name the setting the operator actually wrote.
            raise ConfigurationError(
                f"Setting 'project_version' has an invalid value {version!r}: expected MAJOR.MINOR[.PATCH] "
                "(it gives http_api_version), or set http_api_version")
        settings["http_api_version"] = ".".join(parts[:2]) if len(parts) > 1 else parts[0] + ".0"
    major = str(settings["http_api_version"]).split(".")[0]
    if not major.isdigit():
        raise ConfigurationError(
            f"Setting 'http_api_version' has an invalid value {settings['http_api_version']!r}: "
            "expected MAJOR.MINOR")
    if settings["batch_max_requests"] == 0:
        settings["batch_max_requests"] = None
    for kind in ("storage", "cache", "permission"):
        _check_backend_url(settings, kind)
    _check_values(settings)
    return settings


# Smallest value of numeric settings (``None`` stays allowed where the type is optional): a negative pool, page or
# body size would otherwise start fine and then fail every request, or answer nonsense.
_MINIMUMS: Dict[str, float] = {
    **{f"{kind}_{name}": minimum for kind in ("storage", "cache", "permission")
       for name, minimum in (("pool_size", 1), ("pool_timeout", 0), ("statement_timeout", 0),
                                 ("response_timeout", 0))},
    "storage_max_request_size": 1, "paginate_by": 1, "last_modified_margin_ms": 0, "batch_max_requests": 0,
    "batch_max_body_size": 1, "backoff": 0, "backoff_percentage": 0, "retry_after_seconds": 0,
    "cors_max_age_seconds": 0, "statsd_flush_interval_seconds": 0,
}
_MAXIMUMS: Dict[str, float] = {"backoff_percentage": 100}
_URLS = ("project_docs", "eos_url", "error_info_link")
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")


def _check_values(settings: Settings) -> None:
    """Range and shape checks that the type alone does not make; each error names the setting."""
    for name, value in settings.items():
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        low = _MINIMUMS.get(name, 0 if name.endswith("_cache_expires_seconds") else None)
        high = _MAXIMUMS.get(name)
        if (low is not None and value < low) or (high is not None and value > high):
            expected = f"between {low:g} and {high:g}" if high is not None else f"{low:g} or more"
            raise ConfigurationError(f"Setting {name!r} has an invalid value {value!r}: expected {expected}")
    if settings["heartbeat_timeout_seconds"] <= 0:
        raise ConfigurationError(f"Setting 'heartbeat_timeout_seconds' has an invalid value "
                                 f"{settings['heartbeat_timeout_seconds']!r}: expected more than 0 seconds")
    for name in _URLS:
        url = settings[name]
        if url:
            parts = urlsplit(str(url))
            if parts.scheme not in ("http", "https") or not parts.netloc or " " in str(url):
                raise ConfigurationError(f"Setting {name!r} has an invalid value {url!r}: "
                                         "expected an absolute http:// or https:// URL")
    scheme = settings["http_scheme"]
    if scheme is not None and scheme not in ("http", "https"):
        raise ConfigurationError(f"Setting 'http_scheme' has an invalid value {scheme!r}: expected http or https")
    host = settings["http_host"]
    if host is not None and not _HOST.match(host):
        raise ConfigurationError(f"Setting 'http_host' has an invalid value {host!r}: expected host or host:port")


BACKEND_SCHEMES = {"memory": "memory", "redis": "redis", "postgresql": "postgresql", "postgres": "postgresql"}


def _check_backend_url(settings: Settings, kind: str) -> None:
    url = settings[f"{kind}_url"]
    if settings[f"{kind}_backend"] or not url:
        return
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in BACKEND_SCHEMES:
        raise ConfigurationError(
            f"Setting '{kind}_url' has an invalid value {url!r}: unknown backend "
            f"(expected one of {', '.join(sorted(BACKEND_SCHEMES))}://...)")


def api_prefix(settings: Mapping[str, Any]) -> str:
    """The `/vN` prefix of the current API version."""
    return "/v" + str(settings["http_api_version"]).split(".")[0]

