from django.conf import settings
from django.contrib import admin
from django.core.exceptions import DisallowedHost, RequestDataTooBig, TooManyFieldsSent
from django.urls import include, path
from django.views import defaults

from rest_framework import exceptions

from jobs.api.exceptions import SERVER_ERROR, ApiError, error_response
from jobs.api.views import HealthView, metrics_view
from jobs.api.playground import PlaygroundView

urlpatterns = [
    # A page for trying the API in a browser, built on the public API only.
    path("", PlaygroundView.as_view(), name="playground"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("jobs.api.urls")),
    # The original service answered its health check at the root, and its
    # demo script starts there. Left out of the schema (jobs/api/schema.py).
    path("health", HealthView.as_view(), name="root-health"),
    path("health/", HealthView.as_view()),
]
if settings.VIDEOGEN_METRICS:
    # Outside /api/v1/: Prometheus' default path, and no API key (its own token).
    urlpatterns.append(path("metrics", metrics_view, name="metrics"))

# Why Django refused a request, in words safe to show: the exceptions' own
# messages echo the request or name settings.
BAD_REQUEST_REASONS = [
    (DisallowedHost, "This server does not answer to the Host header given."),
    (TooManyFieldsSent, "Too many query parameters or form fields."),
    (RequestDataTooBig, "The request body is too large."),
]


def _is_api(request) -> bool:
    return request.path.startswith("/api/")


def bad_request(request, exception=None):
    if _is_api(request):
        detail = next((text for kind, text in BAD_REQUEST_REASONS if isinstance(exception, kind)), "Bad request.")
        return error_response(ApiError(400, detail), request)
    return defaults.bad_request(request, exception)


def permission_denied(request, exception=None):
    if _is_api(request):
        return error_response(exceptions.PermissionDenied("Forbidden."), request)
    return defaults.permission_denied(request, exception)


def not_found(request, exception=None):
    if _is_api(request):
        return error_response(exceptions.NotFound("Not found."), request)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if _is_api(request):
        return error_response(ApiError(500, SERVER_ERROR), request)
    return defaults.server_error(request)


handler400 = bad_request
handler403 = permission_denied
handler404 = not_found
handler500 = server_error
