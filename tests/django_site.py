"""A small Django site that gains the Cliquet protocol under ``/v1``, for ``tests/test_django.py``.

An ordinary Django project configured in-process (no database): HTML pages at the root (Django's own templates,
``APPEND_SLASH`` and CSRF protection, HTML error pages), and JSON views under ``/v1`` next to the resources, reached
through the resource app's ``fallback``.  Both URL sets are served by the same Django app: a middleware switches to
the API's URLconf (``request.urlconf``) on the requests the version prefix routed, Django's own tool for per-request
URLconfs, so that the pages are not served under ``/v1`` nor the API views at the root.

The API views follow the protocol, not Django's habits: their routes have no trailing slash, they are
``csrf_exempt`` (they authenticate with the ``Authorization`` header, never a cookie, so CSRF does not apply, and
Django would refuse every ``POST`` without a CSRF token), and they name their methods, so that the plain
``OPTIONS`` a CORS preflight sends down never runs them.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template import engines
from django.urls import path, reverse
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from wsgicliquet.environ import API_PREFIX, PRINCIPALS, SETTINGS, STORAGE, USERID, VIEW
from wsgicliquet.errors import HTTPError, backend_unavailable, invalid, unauthorized_or_forbidden
from wsgicliquet.pipeline import build_pipeline
from wsgicliquet.resource import Resource, ResourceApp
from wsgicliquet.resource.body import parse_json
from wsgicliquet.resource.schema import URL
from wsgicliquet.settings import load_settings
from wsgicliquet.storage import BackendError, Sort
from wsgicliquet.types import WSGIApp

DJANGO_SETTINGS: Dict[str, Any] = {
    "DEBUG": False,
    "SECRET_KEY": "not-a-secret",
    "ALLOWED_HOSTS": ["localhost", "testserver", "127.0.0.1"],
    "ROOT_URLCONF": __name__,
    "INSTALLED_APPS": [],
    "DATABASES": {},
    "MIDDLEWARE": [
        f"{__name__}.ApiMiddleware",
        "django.middleware.security.SecurityMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
    ],
    "TEMPLATES": [{"BACKEND": "django.template.backends.django.DjangoTemplates"}],
    "APPEND_SLASH": True,
    "USE_TZ": True,
    "LOGGING_CONFIG": None,  # leave the process's logging as the tests set it
}

PAGE = """<!doctype html>
<html><head><title>{{ title }}</title></head>
<body><h1>{{ title }}</h1><p>{{ text }}</p>
<p><a href="{% url 'index' %}">Home</a> <a href="{% url 'about' %}">About</a></p>
{% if form %}<form method="post">{% csrf_token %}<input name="message"><button>Send</button></form>{% endif %}
</body></html>
"""


def render(request: HttpRequest, **context: Any) -> HttpResponse:
    return HttpResponse(engines["django"].from_string(PAGE).render(context, request))


# The site, at the root.

@require_GET
def index(request: HttpRequest) -> HttpResponse:
    return render(request, title="Reading club", text="Books to read, bookmarks in the API.")


@require_GET
def about(request: HttpRequest) -> HttpResponse:
    return render(request, title="About", text="A reading club with a Cliquet API under /v1.")


@require_GET
def status(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"site": "reading club", "books": ["Dune", "Emma"]})


@require_http_methods(["GET", "POST"])
def contact(request: HttpRequest) -> HttpResponse:
    """A form: CSRF-protected, as every page of the site stays."""
    if request.method == "POST":
        return render(request, title="Thanks", text=request.POST.get("message", ""))
    return render(request, title="Contact", text="Write to us.", form=True)


def broken(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("a bug in a view")


urlpatterns = [
    path("", index, name="index"),
    path("about/", about, name="about"),
    path("status.json", status, name="status"),
    path("contact/", contact, name="contact"),
    path("broken/", broken),
]


# The API views, under /v1 next to the resources.

class Bookmark(Resource):
    """The classic Cliquet resource: ``url`` is required and an absolute URI."""

    schema = {"type": "object", "properties": {"url": URL}, "required": ["url"]}
    preserve_unknown = True


def error_response(error: HTTPError) -> JsonResponse:
    """A wsgicliquet error (``unauthorized_or_forbidden()``, ``invalid()``) as a Django response."""
    response = JsonResponse(error.to_dict(), status=error.code)
    for name, value in error.headers:
        response[name] = value
    return response


@csrf_exempt
@require_http_methods(["GET", "POST"])
def reading(request: HttpRequest) -> JsonResponse:
    """``POST {"title": "Dune", "pages": 412}`` records a book the user read; ``GET`` lists them, longest first."""
    environ = request.environ
    environ[VIEW] = "reading"
    userid: Optional[str] = environ.get(USERID)
    if userid is None:
        return error_response(unauthorized_or_forbidden(environ.get(PRINCIPALS, ())))
    storage = environ[STORAGE]
    if request.method in ("GET", "HEAD"):
        records, _total = storage.get_all("reading", userid, sorting=[Sort("pages", -1)])
        return JsonResponse({"data": records})
    try:
        body = parse_json(request.body) if request.content_type == "application/json" else None
    except HTTPError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("title"), str) \
            or not isinstance(body.get("pages"), int) or isinstance(body.get("pages"), bool):
        return error_response(invalid("body", "reading", 'Expected {"title": string, "pages": integer}'))
    record = storage.create("reading", userid, {"title": body["title"], "pages": body["pages"]})
    response = JsonResponse({"data": record}, status=201)
    response["Location"] = request.build_absolute_uri(reverse("reading"))
    return response


@require_http_methods(["POST"])
def notes(request: HttpRequest) -> JsonResponse:
    """An API view that forgets ``csrf_exempt``: Django refuses its ``POST`` without a CSRF token (403)."""
    return JsonResponse({"data": {"note": request.body.decode()}}, status=201)


@csrf_exempt
@require_http_methods(["POST"])
def broken_after_writing(request: HttpRequest) -> HttpResponse:
    """A bug after a write: the request's storage transaction must roll the write back."""
    request.environ[STORAGE].create("reading", request.environ[USERID], {"title": "Lost", "pages": 1})
    raise RuntimeError("a bug after a write")


class WhoAmI(View):
    """A class-based view: who the request is from, which of their bookmarks the resource app stored, and the URLs
    Django builds under ``SCRIPT_NAME=/v1`` (``reverse()``, ``request.path``)."""

    http_method_names = ["get", "head", "options"]

    def get(self, request: HttpRequest) -> JsonResponse:
        environ = request.environ
        environ[VIEW] = "whoami"
        userid = environ.get(USERID)
        bookmarks = environ[STORAGE].get_all("bookmark", userid)[0] if userid else []
        return JsonResponse({
            "userid": userid,
            "bookmarks": sorted(record["url"] for record in bookmarks),
            "script_name": request.META["SCRIPT_NAME"],
            "path": request.path,
            "path_info": request.path_info,
            "reverse": reverse("whoami"),
            "absolute": request.build_absolute_uri(reverse("reading")),
        })


class ApiUrls:
    """The URLconf of the requests under ``/v1`` (routes without a trailing slash, as the protocol's)."""

    urlpatterns = [
        path("reading", reading, name="reading"),
        path("whoami", csrf_exempt(WhoAmI.as_view()), name="whoami"),
        path("broken", broken),
        path("broken-after-writing", broken_after_writing),
        path("notes", notes),
        path("slashed/", csrf_exempt(WhoAmI.as_view())),  # Django's habit, kept by a user: APPEND_SLASH applies
    ]


class ApiMiddleware:
    """The Django side of the API: the API's URLconf on the requests the version prefix routed (the site's on the
    others), and a storage failure in an API view answered with the protocol's 503 errno 201, logged and reported
    to Sentry as the resource app's are (Django would answer its own 500, which becomes a JSON 500 errno 999)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if API_PREFIX in request.environ:
            request.urlconf = ApiUrls
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> Optional[HttpResponse]:
        if isinstance(exception, BackendError) and API_PREFIX in request.environ:
            settings = request.environ.get(SETTINGS) or {}
            return error_response(backend_unavailable(exception, request.environ, settings.get("retry_after_seconds")))
        return None


def configure() -> None:
    """Configure Django in this process (once), as ``DJANGO_SETTINGS_MODULE`` would."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(**DJANGO_SETTINGS)
        django.setup()


def make_app(settings: Optional[Dict[str, Any]] = None) -> WSGIApp:
    """Django's WSGI app wrapped by the pipeline, with the resources mounted at ``/v1`` and Django as their
    fallback: the same wrapping as the Flask example's."""
    from django.core.wsgi import get_wsgi_application

    configure()
    site = get_wsgi_application()
    settings = load_settings(settings or {})
    return build_pipeline(site, settings, versions={"/v1": ResourceApp([Bookmark], settings, fallback=site)})
