"""
API errors. Views raise them; one function, `error_response`, renders every
error answer under /api/: DRF's exception handler (api_exception_handler),
the middleware and Django's handler400/403/404/500 (videogen/urls.py) all
answer through it, so each body has one shape: {"detail": "...", ...}.
"""

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpResponse
from rest_framework import exceptions
from rest_framework.renderers import JSONRenderer
from rest_framework.utils.mediatypes import media_type_matches, order_by_precedence

logger = logging.getLogger(__name__)

# What an unreachable or restarting database raises; answered with a 503.
# (Other database errors, an IntegrityError say, are bugs: a 500.)
DATABASE_DOWN = (OperationalError, InterfaceError)


class ApiError(exceptions.APIException):
    """
    An error answer DRF has no exception for, or one that carries more than
    `detail`: fields of its body (job_id, status, expired_at), headers, and
    `wait`, the Retry-After header in seconds (as on DRF's Throttled).
    """

    def __init__(
        self, status_code: int, detail: str, *, wait: int | None = None, headers: dict[str, str] | None = None, **fields
    ):
        super().__init__(detail)
        self.status_code = status_code
        self.wait = wait
        self.headers = headers or {}
        self.fields = fields


# Retry-After, in seconds, for what is briefly unavailable: the database, the file storage.
RETRY_SOON = 5
SERVER_ERROR = "Internal server error."


def accepted_json(request) -> str | None:
    """
    The Accept entry a JSON body answers, as DRF's negotiation picks it for
    a success body (its parameters, `indent=` among them, kept); None when
    no entry takes JSON.
    """
    accept = request.META.get("HTTP_ACCEPT", "") if request is not None else ""
    if "indent" not in accept:
        # The common case, without parsing: nothing would change the bytes.
        return None
    for media_types in order_by_precedence([entry.strip() for entry in accept.split(",")]):
        for media_type in media_types:
            if media_type_matches(JSONRenderer.media_type, media_type):
                return media_type
    return None


def field_messages(detail, prefix: str = "") -> list[str]:
    """
    One field's errors as the flat list of strings the schema promises. A list
    field's items and a nested object's keys report as {"0": [...]} in DRF;
    here each message says which item or key it is about.
    """
    if isinstance(detail, dict):
        messages = []
        for key, nested in detail.items():
            label = f"item {key}" if str(key).isdigit() else key
            messages += field_messages(nested, f"{prefix}{label}: ")
        return messages
    if isinstance(detail, list):
        return [message for nested in detail for message in field_messages(nested, prefix)]
    return [f"{prefix}{detail}"]


def error_response(exc: exceptions.APIException, request=None) -> HttpResponse:
    """
    The answer to an API error: its JSON body, status and headers. A plain
    HttpResponse rendered here, never by the view's negotiated renderer, so
    an error is JSON whatever was accepted (the file's type on /download,
    YAML or HTML on /schema and /docs); `indent=` in the request's Accept is
    honoured as on a success body.
    """
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        errors = {field: field_messages(messages) for field, messages in detail.items()}
        summary = "; ".join(f"{field}: {' '.join(str(m) for m in messages)}" for field, messages in errors.items())
        data = {"detail": f"Invalid request. {summary}", "errors": errors}
    elif isinstance(exc.detail, (list, dict)):
        data = exc.detail
    else:
        data = {"detail": exc.detail, **getattr(exc, "fields", {})}
    headers = dict(getattr(exc, "headers", {}))
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = "%d" % exc.wait
    return HttpResponse(
        JSONRenderer().render(data, accepted_json(request)),
        status=exc.status_code,
        content_type=JSONRenderer.media_type,
        headers=headers,
    )


def database_down(request) -> HttpResponse:
    """The answer while the database is unreachable or restarting, from a view or from the middleware."""
    logger.exception("database error while serving %s", request.path)
    down = ApiError(503, "The database is unavailable; try again shortly.", wait=RETRY_SOON)
    return error_response(down, request)


def api_exception_handler(exc, context) -> HttpResponse | None:
    """DRF's EXCEPTION_HANDLER: API errors through error_response; the database down is a 503."""
    if isinstance(exc, DATABASE_DOWN):
        return database_down(context["request"])
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(*exc.args)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(*exc.args)
    if not isinstance(exc, exceptions.APIException):
        return None
    # Imported here: rest_framework.views reads DEFAULT_CONTENT_NEGOTIATION_CLASS
    # (jobs.api.http, which raises these errors) as it is imported.
    from rest_framework.views import set_rollback

    set_rollback()
    return error_response(exc, context["request"])
