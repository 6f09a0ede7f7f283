"""The resource WSGI app: routing to the handlers of the resources an application declares.

::

    app = ResourceApp([Bookmark], settings)                      # serves /bookmarks and /bookmarks/{id}
    app = ResourceApp([Bookmark], settings, fallback=flask_app)  # other paths go to Flask, unchanged

Mount it under the version prefix (the ``version_prefix`` middleware sets ``SCRIPT_NAME=/v1``).  It is framework
neutral: it reads the user id and principals the authentication middleware put in the environ
(``wsgicliquet.userid``, ``wsgicliquet.principals``), and puts its storage backend in the environ
(``wsgicliquet.storage``) of every request, so that a view of the fallback app reaches the same records.

Everything is computed once, at construction: the Werkzeug routing map, the compiled schemas, the settings of
each endpoint.  Per request: one route match, the checks in this order (404 unknown URL, 405 method, 406 Accept,
415 Content-Type, 400 URL values, 401 anonymous), then the handler of :mod:`wsgicliquet.resource.handlers`, then,
when something subscribed and no layer above owns the request's events (a transaction, a batch), their notification.
"""
from __future__ import annotations

import functools
import re
from typing import Any, Callable, Dict, FrozenSet, Iterable, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

from webob import Request
from webob.acceptparse import create_accept_header
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.routing.exceptions import RoutingException

from wsgicliquet.backends import import_string, load_backend
from wsgicliquet.environ import LOG_CONTEXT, PERMISSION, STORAGE, VIEW
from wsgicliquet.errors import ERRORS, HTTPError, backend_unavailable, invalid, validation_error
from wsgicliquet.events import Notifier, load_listeners, request_queue
from wsgicliquet.permission import Permission
from wsgicliquet.resource.body import empty_response
from wsgicliquet.resource.handlers import HANDLERS, Call, Options
from wsgicliquet.resource.resource import Resource, ResourceSpec
from wsgicliquet.settings import ConfigurationError, load_settings
from wsgicliquet.storage import BackendError, Storage
from wsgicliquet.types import WSGIApp

__all__ = ["ResourceApp", "app_factory"]


_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
_WRITES = frozenset({"POST", "PUT", "PATCH"})
_JSON = "application/json"
_ACCEPT_ERROR = "Accept header should be one of ['application/json']"
_CONTENT_TYPE_ERROR = "Content-Type header should be one of ['application/json']"


class _Route(NamedTuple):
    spec: ResourceSpec
    kind: str  # "collection" or "record"
    methods: FrozenSet[str]
    allow: str


class ResourceApp:
    """Serve ``resources`` (Resource subclasses, or dotted paths ``module:Class``).

    ``storage`` defaults to the backend of the settings (``storage_url``), shared per process; ``fallback`` is
    a WSGI app that receives every request whose path matches no resource (else 404 errno 111).
    ``permission`` (default: ``permission_url``) is needed by shareable resources only, and is put in the environ
    (``wsgicliquet.permission``) of every request.
    """

    def __init__(self, resources: Sequence[Union[type, str]], settings: Optional[Mapping[str, Any]] = None, *,
                 storage: Optional[Storage] = None, fallback: Optional[WSGIApp] = None,
                 permission: Optional[Permission] = None) -> None:
        self.settings = load_settings(settings or {})
        if storage is None:
            storage = load_backend("storage", self.settings)
            if storage is None:
                raise ConfigurationError("Setting 'storage_url' is empty: the resource app needs a storage backend")
        self.storage = storage
        self.fallback = fallback
        #: The subscribers of the resources' events (:mod:`wsgicliquet.events`): ``app.events.subscribe(...)``.
        self.events = Notifier()
        self.options = Options(
            storage=storage, max_request_size=self.settings["storage_max_request_size"],
            last_modified_margin_ms=self.settings["last_modified_margin_ms"],
            paginate_by=self.settings["paginate_by"], http_scheme=self.settings["http_scheme"],
            http_host=self.settings["http_host"], events=self.events)
        self.routes: Dict[str, _Route] = {}
        rules = []
        paths: Dict[str, Tuple[str, str]] = {}  # the shape of each path (placeholder names aside): its owner
        for resource in resources:
            spec = _resource_class(resource).compile(self.settings)
            if f"{spec.name}-collection" in self.routes:
                raise ConfigurationError(f"Resource {spec.name!r} is declared twice: each resource needs a name of "
                                         f"its own (the class attribute name)")
            for kind, rule, methods in (("collection", spec.collection_rule, spec.collection_methods),
                                        ("record", spec.record_rule, spec.record_methods)):
                endpoint = f"{spec.name}-{kind}"
                shape = _RULE_PLACEHOLDER.sub("<>", rule)
                path = _RULE_PLACEHOLDER.sub(lambda match: "{" + match.group()[1:-1] + "}", rule)
                if shape in paths:
                    owner, owner_path = paths[shape]
                    raise ConfigurationError(f"Resource {spec.name!r}: its {kind} path {path!r} matches the same URLs "
                                             f"as the {owner} {owner_path!r}")
                paths[shape] = (f"{kind} path of resource {spec.name!r},", path)
                allow = ", ".join([method for method in _METHOD_ORDER if method in methods] + ["OPTIONS"])
                self.routes[endpoint] = _Route(spec, kind, methods, allow)
                rules.append(Rule(rule, endpoint=endpoint))
        self.url_map = Map(rules, merge_slashes=False)
        self.permission = permission
        shareable = [spec.name for spec in self.specs.values() if spec.cls.needs_permission_backend]
        if shareable and permission is None:
            self.permission = load_backend("permission", self.settings)
            if self.permission is None:
                raise ConfigurationError(f"Setting 'permission_url' is empty: resources {shareable} need a "
                                         f"permission backend")
        load_listeners(self.settings, self.events)
        # Matching a path depends on the path alone: the last paths seen (clients poll the same collection and
        # records; a fallback app's views are hit again and again) skip Werkzeug's matcher, about 4 µs for a match
        # and more for a miss, which Werkzeug raises.  A miss is remembered as None.
        self._match = functools.lru_cache(maxsize=_MATCH_CACHE_SIZE)(_matcher(self.url_map))

    @property
    def specs(self) -> Dict[str, ResourceSpec]:
        """The compiled resources, by name."""
        return {route.spec.name: route.spec for route in self.routes.values()}

    def __call__(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ[STORAGE] = self.storage
        if self.permission is not None:
            environ[PERMISSION] = self.permission
        try:
            matched = self._match(environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8") or "/")
        except UnicodeError:
            matched = None
        if matched is None:
            if self.fallback is not None:
                return self.fallback(environ, start_response)
            return HTTPError(404, ERRORS.MISSING_RESOURCE)(environ, start_response)
        endpoint, args = matched[0], dict(matched[1])  # the cached answer stays untouched
        environ[VIEW] = endpoint
        events = self.events
        # The events of a request no layer above notifies (no transaction, not in a batch) are notified here.
        queue = request_queue(environ) if events.changes or events.reads else None
        try:
            response = self._dispatch(environ, self.routes[endpoint], args)
            if queue:
                queue.notify()
        except HTTPError as error:
            return error(environ, start_response)
        except BackendError as exc:
            return backend_unavailable(exc, environ, self.settings["retry_after_seconds"])(environ, start_response)
        finally:
            if queue is not None:
                queue.discard()
        return response(environ, start_response)

    def _dispatch(self, environ: Dict[str, Any], route: _Route, args: Dict[str, str]) -> Any:
        method = environ["REQUEST_METHOD"]
        if method not in route.methods:
            if method == "OPTIONS":
                return empty_response(200, [("Allow", route.allow)])
            raise HTTPError(405, ERRORS.METHOD_NOT_ALLOWED, headers=[("Allow", route.allow)])
        _negotiate(environ, method)
        log = environ.get(LOG_CONTEXT)
        if log is None:
            log = environ[LOG_CONTEXT] = {}
        spec = route.spec
        log["collection_id"] = spec.collection_id
        spec.check_placeholders(args)
        object_id = args.get("id")
        if route.kind == "record" and not spec.generator.match(object_id):
            raise invalid("path", None, "Invalid record id")
        request = Request(environ)
        request.matchdict = args
        resource = spec.cls(request, spec, args)
        parent_id = resource.get_parent_id(request)
        call = Call(environ, request, resource, spec, self.options, parent_id, object_id, log)
        return HANDLERS[(route.kind, method)](call)


#: A placeholder of a Werkzeug rule: ``/a/<x>`` and ``/a/<y>`` match the same paths.
_RULE_PLACEHOLDER = re.compile(r"<\w+>")

#: How many matched paths the router remembers.
_MATCH_CACHE_SIZE = 1024


def _matcher(url_map: Map) -> Callable[[str], Optional[Tuple[str, Mapping[str, str]]]]:
    """``(endpoint, arguments)`` of a path, or None when no resource route matches it."""
    match = url_map.bind("localhost").match

    def matcher(path: str) -> Optional[Tuple[str, Mapping[str, str]]]:
        try:
            return match(path)
        except (HTTPException, RoutingException):
            return None

    return matcher


def _resource_class(resource: Union[type, str]) -> type:
    if isinstance(resource, str):
        resource = import_string(resource, "resources")
    if not (isinstance(resource, type) and issubclass(resource, Resource)):
        raise ConfigurationError(f"Setting 'resources': {resource!r} is not a Resource subclass")
    return resource


@functools.lru_cache(maxsize=256)
def _accepts_json(accept: str) -> bool:
    """Whether ``Accept`` allows JSON.  Media type parameters are not compared (``application/json; charset=utf-8``
    is fine), as in Cliquet: WebOb would match them case-sensitively against the offer."""
    header = create_accept_header(accept)
    ranges = getattr(header, "parsed", None)
    if ranges:
        header = create_accept_header(", ".join(f"{media.split(';', 1)[0]};q={q}" for media, q, _, _ in ranges))
    return bool(header.acceptable_offers([_JSON]))


def _negotiate(environ: Dict[str, Any], method: str) -> None:
    """406 when ``Accept`` excludes JSON; 415 when a write body is not declared as JSON (§3.1)."""
    accept = environ.get("HTTP_ACCEPT")
    if accept and not _accepts_json(accept):
        raise validation_error([{"location": "header", "name": "Accept", "description": _ACCEPT_ERROR}], code=406)
    if method in _WRITES:
        content_type = environ.get("CONTENT_TYPE") or ""
        media = content_type.split(";", 1)[0].strip().lower()
        if (media and media != _JSON) or (not media and environ.get("CONTENT_LENGTH") not in (None, "", "0")):
            raise validation_error([{"location": "header", "name": "Content-Type",
                                     "description": _CONTENT_TYPE_ERROR}], code=415)


def app_factory(global_conf: Mapping[str, Any], **local_conf: Any) -> ResourceApp:
    """PasteDeploy ``egg:wsgicliquet#resources``: resources named by dotted paths in the setting ``resources``,
    and the app serving unmatched paths by the dotted path in ``resources_fallback`` (e.g. a Flask app)."""
    settings = load_settings({**global_conf, **local_conf})
    if not settings["resources"]:
        raise ConfigurationError("Setting 'resources' is empty: name at least one Resource (module:Class)")
    fallback = (import_string(settings["resources_fallback"], "resources_fallback")
                if settings["resources_fallback"] else None)
    return ResourceApp(settings["resources"], settings, fallback=fallback)
