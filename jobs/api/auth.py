"""
Opt-in API keys (VIDEOGEN_AUTH=api_key) and request rate limits.

In `none` mode (the inherited contract) nothing here authenticates anyone:
user_id is trusted from the request, and only the rate limits apply, when set.
"""

from django.conf import settings
from django.core.cache import caches
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.throttling import SimpleRateThrottle
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object

from jobs.api.exceptions import ApiError
from jobs.models import ApiKey, Priority

NO_SUCH_JOB = "No such job."


class ApiKeyAuthentication(BaseAuthentication):
    """`Authorization: Bearer <key>`; the key is both request.user and request.auth."""

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            # No credentials: IsAuthenticated then answers 401 with WWW-Authenticate.
            return None
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise exceptions.AuthenticationFailed("Authorization must be 'Bearer <API key>'.")
        key = ApiKey.objects.verify(token)
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        return key, key

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="videogen"'


def request_key(request) -> ApiKey | None:
    auth = getattr(request, "auth", None)
    return auth if isinstance(auth, ApiKey) else None


def acting_user_id(request, given: str | None, *, submit: bool = False) -> str | None:
    """
    The user_id a request acts as, given the one it names (None: it names
    none). Without a key (`none` mode) or with an operator key, the one
    named; for a read or cancel, None is every user. With a user's key,
    always the key's, and naming another user_id is refused: for a read or
    cancel a 404, as for a missing job, so a key cannot even learn that
    another user's job exists; for a submit a 403.
    """
    key = request_key(request)
    if key is None or key.operator:
        return given
    if given is not None and given != key.user_id:
        if submit:
            raise exceptions.PermissionDenied("This API key cannot submit jobs for another user_id.")
        raise exceptions.NotFound(NO_SUCH_JOB)
    return key.user_id


def check_submit_priority(request, priority: str) -> None:
    """With API keys on, priority high needs a key with the priority scope: a 403 naming the field."""
    key = request_key(request)
    if key is not None and priority == Priority.HIGH.label and not key.has_scope("priority"):
        message = "This API key cannot submit priority high: it needs the priority scope."
        raise ApiError(403, message, errors={"priority": [message]})


class _RateThrottle(SimpleRateThrottle):
    """
    Per key in api_key mode, per user_id in none mode (the one in the
    query, or in a submit's body), per client address when there is none.
    The history lives in the "throttle" cache, which all gunicorn processes
    share (the database, or Redis when REDIS_URL is set).
    """

    cache = caches["throttle"]
    setting: str

    def get_rate(self):
        return getattr(settings, self.setting)

    def applies_to(self, view) -> bool:
        raise NotImplementedError

    def allow_request(self, request, view):
        if self.rate is None or not self.applies_to(view):
            return True
        return super().allow_request(request, view)

    def get_cache_key(self, request, view):
        key = request_key(request)
        if key is not None:
            ident = f"key:{key.prefix}"
        else:
            user_id = request.query_params.get("user_id")
            if user_id is None and self.scope == "submit" and isinstance(request.data, dict):
                user_id = request.data.get("user_id")
            ident = f"user:{user_id.strip()}" if isinstance(user_id, str) and user_id.strip() else f"addr:{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


class SubmitThrottle(_RateThrottle):
    scope = "submit"
    setting = "VIDEOGEN_RATE_LIMIT_SUBMIT"

    def applies_to(self, view) -> bool:
        return getattr(view, "throttle_kind", "read") == "submit"


class ReadThrottle(_RateThrottle):
    scope = "read"
    setting = "VIDEOGEN_RATE_LIMIT_READ"

    def applies_to(self, view) -> bool:
        return getattr(view, "throttle_kind", "read") == "read"


class ApiKeySchema(OpenApiAuthenticationExtension):
    """The schema's security scheme in api_key mode (in none mode no view authenticates)."""

    target_class = ApiKeyAuthentication
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return build_bearer_security_scheme_object(header_name="Authorization", token_prefix="Bearer")
