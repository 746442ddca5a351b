"""OpenAPI: the shapes of responses the views build by hand, and what to leave out of the schema."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema_serializer
from rest_framework import serializers

from jobs.api.serializers import VideoInfo


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()), required=False)
    job_id = serializers.UUIDField(required=False)
    status = serializers.CharField(required=False)


# The whole answer of the viewset's list action, pagination included: not
# to be wrapped in an array and a paginator's envelope, as drf-spectacular
# does for a list action's serializer.
@extend_schema_serializer(many=False)
class VideoListSerializer(serializers.Serializer):
    videos = VideoInfo(many=True)
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    total = serializers.IntegerField(help_text="Exact while total_is_exact; otherwise a lower bound.")
    total_is_exact = serializers.BooleanField()


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["healthy", "unhealthy"])
    checks = serializers.DictField(child=serializers.CharField())


class ModelBoundSerializer(serializers.Serializer):
    min = serializers.FloatField()
    max = serializers.FloatField()
    multiple_of = serializers.IntegerField(required=False)


class ModelInfoSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    pipeline = serializers.CharField()
    defaults = serializers.DictField(child=serializers.FloatField())
    bounds = serializers.DictField(child=ModelBoundSerializer())
    # What the model can start from: text-to-video, image-to-video, first-last-frame.
    modes = serializers.ListField(child=serializers.CharField())


class ModelListSerializer(serializers.Serializer):
    default = serializers.CharField()
    models = ModelInfoSerializer(many=True)


ERROR = OpenApiResponse(ErrorSerializer)
USER_ID = OpenApiParameter(
    "user_id",
    OpenApiTypes.STR,
    OpenApiParameter.QUERY,
    description="Only this user's jobs; another user's job answers 404, like a missing one.",
)
IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="Retrying with the same key (and user_id) within 24 hours returns the original job with 200.",
)
COMMON_ERRORS = {400: ERROR, 404: ERROR, 405: ERROR, 413: ERROR, 415: ERROR, 503: ERROR}


class RedirectSerializer(serializers.Serializer):
    url = serializers.URLField(help_text="The same as the Location header.")
    expires_in = serializers.IntegerField(help_text="Seconds the URL stays valid (VIDEOGEN_S3_URL_EXPIRY).")


def file_responses(content_type: str) -> dict:
    """The file itself for 200 and 206; JSON for every other answer, whatever the Accept header."""
    binary = OpenApiResponse(OpenApiTypes.BINARY, description=content_type)
    json = "application/json"
    errors = {409: ERROR, 410: ERROR, 412: ERROR, 416: ERROR, **COMMON_ERRORS}
    return {
        (200, content_type): binary,
        (206, content_type): binary,
        (302, json): OpenApiResponse(
            RedirectSerializer, description="With S3 storage and VIDEOGEN_S3_REDIRECT: a presigned URL in Location."
        ),
        304: OpenApiResponse(description="Not modified (If-None-Match or If-Modified-Since)."),
        **{(code, json): response for code, response in errors.items()},
    }


def hide_trailing_slash_aliases(endpoints):
    """Every path also answers with a trailing slash; the schema lists each once."""
    return [endpoint for endpoint in endpoints if not endpoint[0].endswith("/")]


def hide_paths_outside_the_api(endpoints):
    """/health also answers at the root, for the original's clients; the schema documents /api/v1/ alone."""
    return [endpoint for endpoint in endpoints if endpoint[0].startswith("/api/")]
