import logging

from django.conf import settings
from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
from django.http import Http404

from jobs.api.exceptions import DATABASE_DOWN, SERVER_ERROR, ApiError, database_down, error_response

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"
# What Django itself turns into a 4xx: too many query parameters
# (TooManyFieldsSent) and a foreign Host are SuspiciousOperations.
CLIENT_ERRORS = (SuspiciousOperation, BadRequest, PermissionDenied, Http404)


SUBMIT_PATHS = ("/api/v1/generate", "/api/v1/generate/")


def body_limit(path: str) -> int:
    """The largest request body this path takes: a submit's may carry its images, every other the body limit."""
    if path in SUBMIT_PATHS:
        # Two images, as base64 in JSON (4/3 of their bytes) or as file parts, beside the other fields.
        return settings.VIDEOGEN_MAX_BODY_BYTES + 2 * (settings.VIDEOGEN_MAX_IMAGE_BYTES * 4 // 3 + 4)
    return settings.VIDEOGEN_MAX_BODY_BYTES


class JsonApiErrorsMiddleware:
    """
    Under /api/, errors Django itself would answer in HTML are JSON: bodies
    over the size limit (DRF streams JSON bodies past Django's own check),
    an unreachable database, anything unexpected.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith(API_PREFIX):
            limit = body_limit(request.path)
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if length > limit:
                too_big = ApiError(413, f"The request body is {length} bytes; the limit is {limit} bytes.")
                return error_response(too_big, request)
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not request.path.startswith(API_PREFIX):
            return None
        if isinstance(exception, CLIENT_ERRORS):
            # Django answers these with 400, 403 or 404 through the handlers
            # in videogen/urls.py, which speak JSON under /api/.
            return None
        if isinstance(exception, DATABASE_DOWN):
            return database_down(request)
        logger.exception("unexpected error while serving %s", request.path)
        return error_response(ApiError(500, SERVER_ERROR), request)
