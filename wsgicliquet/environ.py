"""Every environ key the toolkit shares with downstream code, documented in one place.

Middlewares write them; any WSGI app below (the resource app, a Flask or Bottle view) may read them.
"""

SETTINGS = "wsgicliquet.settings"
"""The coerced :class:`~wsgicliquet.settings.Settings` of the pipeline."""

USERID = "wsgicliquet.userid"
"""The prefixed user id (``basicauth:<hex>``, ``remoteuser:<name>``), or absent when anonymous."""

PRINCIPALS = "wsgicliquet.principals"
"""List of principals: ``system.Everyone``, ``system.Authenticated``, the user id, its groups."""

AUTHN_TYPE = "wsgicliquet.authn_type"
"""Name of the authentication policy that identified the user (``basicauth``)."""

CHALLENGES = "wsgicliquet.challenges"
"""The ``WWW-Authenticate`` values of the configured policies (``Basic realm="Realm"`` for Basic Auth, none for a
trusted front server's user), for the 401 of :func:`~wsgicliquet.errors.unauthorized_or_forbidden`."""

STORAGE = "wsgicliquet.storage"
CACHE = "wsgicliquet.cache"
PERMISSION = "wsgicliquet.permission"
"""The configured backends (set by the ``backends`` middleware and by the resource app)."""

REQUEST_ID = "wsgicliquet.request_id"
"""The request id (``X-Request-Id`` or generated)."""

LOG_CONTEXT = "wsgicliquet.log"
"""A dict that any layer may add fields to; the request log adds them to ``request.summary``."""

VIEW = "wsgicliquet.view"
"""Name of the view that handled the request (``bookmark-collection``, ``hello``, ``batch``), for metrics."""

ERRNO = "wsgicliquet.errno"
"""Errno of the error response, recorded by :class:`~wsgicliquet.errors.HTTPError` (for logging and metrics)."""

HEAD_ERROR = "wsgicliquet.head_error"
"""``(status code, Content-Length)`` of the error an :class:`~wsgicliquet.errors.HTTPError` answered a HEAD with,
without its body: the JSON error converter recognises it and keeps its headers, those of the GET's error."""

PARENT_REQUEST = "wsgicliquet.parent"
"""On a batch sub-request: the environ of the batch request that runs it."""

SUBREQUESTS = "wsgicliquet.subrequests"
"""On a batch request: a list with one ``{"environ": sub_environ, "status": int, "duration": seconds}`` per
sub-request, appended by the batch middleware, read by the request log and StatsD when the response closes."""

API_PREFIX = "wsgicliquet.api_prefix"
"""The version prefix (``/v1``) under which the request is served, set by the version prefix middleware."""

NOT_AN_ERROR = "wsgicliquet.not_an_error"
"""Set by a view whose 4xx/5xx status is a report, not an error (the heartbeat's 503 with the map of check results,
PROTOCOL.md §1.5): the JSON error converter and ``Retry-After`` leave that response unchanged."""

METRICS = "wsgicliquet.metrics"
"""Set by the StatsD middleware: a list that any layer or view below appends ``("c", name, 1)`` counters and
``("ms", name, milliseconds)`` timers to (:func:`wsgicliquet.middleware.statsd.count`, ``timing``); they are sent
with the response's metrics.  Batch sub-requests share their batch's list.  Absent when StatsD is off."""

REPORT_EXCEPTION = "wsgicliquet.report_exception"
"""Set by the Sentry middleware: ``report(exc, environ)``, called by a layer below it that turns an exception into
a response (the JSON error converter inside the version, which answers before the exception could reach Sentry),
so that the error is still reported, with that request's user and request id.  Absent when Sentry is off."""

SUBRESPONSE_HEADERS = "wsgicliquet.subresponse_headers"
"""Set by a header layer above the batch (CORS): a tuple of ``decorate(headers) -> headers`` that the batch
middleware applies to the headers of each sub-response, so that an entry carries them as a direct call would
(PROTOCOL.md §8.3)."""

BATCH_VIEWS = "wsgicliquet.batch_views"
"""Set on a batch request by the layers above the batch that serve paths of their own (the heartbeat): a dict of
path -> WSGI app, through which the batch middleware runs a sub-request for that path, since the layers below it
would answer 404."""

EVENTS = "wsgicliquet.events"
"""The :class:`~wsgicliquet.events.EventQueue` of the request, set by the layer that notifies its events: the
``transaction`` layer (around the commit), else the batch middleware (for a whole batch), else the resource app.
Batch sub-requests share their batch's queue."""
