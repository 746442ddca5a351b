import datetime
import hmac
import logging
import uuid
from typing import NamedTuple

from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, status, viewsets
from rest_framework.decorators import action
from rest_framework.metadata import SimpleMetadata
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BaseRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs import schema
from jobs.auth import NO_SUCH_JOB, check_submit_user, scoped_user_id, submit_user_id
from jobs.deployment import served_models
from jobs.exceptions import RETRY_SOON, ApiError, error_response
from jobs.files import Missing, StorageUnavailable, open_stored, presigned_url, redirects_to_storage
from jobs.http import file_response
from jobs.metrics import render
from jobs.models import JobQuerySet, Status, VideoGenerationJob, count_up_to
from jobs.serializers import (
    USER_ID_MAX_LENGTH,
    GenerationRequest,
    JobSerializer,
    JobStatusSerializer,
    SubmissionSerializer,
    VideoInfo,
    generation_params,
    has_control_characters,
)
from jobs.lifecycle import (
    ActiveJobLimitReached,
    IdempotencyKeyReused,
    broker as queue_broker,
    job_cancel,
    job_create,
    job_delete,
    request_fingerprint,
)
from videogen.logformat import log_fields

logger = logging.getLogger(__name__)

# The query parameters of the per-user endpoints (the file views take these too).
USER_ID_PARAMS = frozenset({"user_id"})
VIDEOS_PARAMS = frozenset({"user_id", "cursor", "page_size"})
USER_ID_DIFFERS = "user_id in the query string and in the body differ; give it once, or the same in both."


def check_query_params(request, allowed: frozenset[str]) -> None:
    """
    Refuse query parameters the endpoint does not take, and any given twice:
    a misspelt filter (USER_ID=, user_id[]=) must not silently widen a
    request to every user's jobs, nor ?user_id=a&user_id=b pick one.
    """
    for name in request.query_params:
        if name not in allowed:
            raise exceptions.ValidationError(
                {name: [f"Unknown query parameter; this endpoint takes {', '.join(sorted(allowed))}."]}
            )
        if len(request.query_params.getlist(name)) > 1:
            raise exceptions.ValidationError({name: [f"{name} must be given at most once."]})


def requested_user_id(
    request, *, allowed: frozenset[str] = USER_ID_PARAMS, body: bool = False, scoped: bool = True
) -> str | None:
    """
    The optional user_id filter, stripped like the one given at submit. It
    is taken from the query string and, where `body` (cancel, a POST), also
    from a JSON body; given in both, they must agree. With an API key
    (`scoped`), the user_id the key may act as (jobs.auth.scoped_user_id).
    """
    check_query_params(request, allowed)
    candidates = []
    if "user_id" in request.query_params:
        candidates.append(_clean_user_id(request.query_params["user_id"]))
    if body:
        data = request.data
        if not isinstance(data, dict):
            raise exceptions.ValidationError({"non_field_errors": ["The body must be a JSON object."]})
        unknown = sorted(set(data) - {"user_id"})
        if unknown:
            raise exceptions.ValidationError({name: ["Unknown field; the body takes only user_id."] for name in unknown})
        if "user_id" in data:
            if not isinstance(data["user_id"], str):
                raise exceptions.ValidationError({"user_id": ["user_id must be a string."]})
            candidates.append(_clean_user_id(data["user_id"]))
    if len(set(candidates)) > 1:
        raise exceptions.ValidationError({"user_id": [USER_ID_DIFFERS]})
    given = candidates[0] if candidates else None
    return scoped_user_id(request, given) if scoped else given


def _clean_user_id(raw: str) -> str:
    user_id = raw.strip()
    problem = None
    if not user_id:
        problem = "user_id must not be blank when given."
    elif len(user_id) > USER_ID_MAX_LENGTH:
        problem = f"user_id has at most {USER_ID_MAX_LENGTH} characters."
    elif has_control_characters(user_id):
        problem = "user_id must not contain control characters."
    if problem:
        raise exceptions.ValidationError({"user_id": [problem]})
    return user_id


def idempotency_key(request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not all(32 < ord(char) < 127 for char in key):
        raise exceptions.ValidationError(
            {"Idempotency-Key": ["The Idempotency-Key header must be 1-255 printable ASCII characters, no spaces."]}
        )
    return key


class VideoCursorPagination(CursorPagination):
    ordering = ("-completed_at", "-id")
    page_size_query_param = "page_size"
    invalid_cursor_message = "Invalid cursor."

    def __init__(self):
        self.page_size = settings.VIDEOGEN_PAGE_SIZE
        self.max_page_size = settings.VIDEOGEN_MAX_PAGE_SIZE

    def get_page_size(self, request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        # ASCII digits only: int() also takes other scripts' digits, and
        # str.isdigit() takes superscripts that int() then refuses. Any
        # number past the maximum means the maximum, however long it is.
        if not (raw.isascii() and raw.isdigit()) or not raw.strip("0"):
            raise exceptions.ValidationError({"page_size": ["page_size must be a positive integer."]})
        digits = raw.lstrip("0")
        if len(digits) > len(str(self.max_page_size)):
            return self.max_page_size
        return min(int(digits), self.max_page_size)

    def decode_cursor(self, request):
        """
        DRF's decoding, then the position itself: it is compared with
        completed_at, so it must be a datetime the database can hold. Any
        cursor that is not one this API made is a 400 naming the field.
        """
        try:
            cursor = super().decode_cursor(request)
        except exceptions.NotFound:
            cursor = None
            valid = False
        else:
            valid = True
        if cursor is not None and cursor.position is not None:
            position = _cursor_datetime(cursor.position)
            valid = position is not None
            cursor = cursor._replace(position=position.isoformat() if position else None)
        if not valid:
            raise exceptions.ValidationError({self.cursor_query_param: [self.invalid_cursor_message]})
        return cursor

    def paginate_queryset(self, queryset, request, view=None):
        self.total, self.total_is_exact = count_up_to(queryset)
        return super().paginate_queryset(queryset, request, view)

    def get_paginated_response(self, data):
        return Response(
            {
                "videos": data,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "total": self.total,
                "total_is_exact": self.total_is_exact,
            }
        )


def _cursor_datetime(value: str) -> datetime.datetime | None:
    """A cursor's position as an aware datetime within the database's range, or None."""
    try:
        parsed = parse_datetime(value)
    except ValueError:
        return None
    if parsed is None:
        return None
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, datetime.timezone.utc)
    try:
        # The database compares in UTC: a year-9999 time east of UTC overflows there.
        return parsed.astimezone(datetime.timezone.utc)
    except OverflowError:
        return None


class _FileType(BaseRenderer):
    """
    Stands for the file's own type in content negotiation (`Accept: video/mp4`
    on /download). Never renders: the view sends the file itself.
    """

    format = None

    def __init__(self, media_type: str):
        self.media_type = media_type


class JobFile(NamedTuple):
    field_name: str
    content_type: str


# The files a completed job has, by the action that sends each.
JOB_FILES = {
    "download": JobFile("video", "video/mp4"),
    "poster": JobFile("poster", "image/jpeg"),
    "preview": JobFile("preview", "image/webp"),
}


class WithoutFields(SimpleMetadata):
    """
    OPTIONS answers without DRF's description of a serializer's fields
    ("actions"), which SimpleMetadata adds for any view with
    get_serializer(): the OpenAPI schema documents the bodies.
    """

    def determine_actions(self, request, view) -> dict:
        return {}


# The job endpoints, under the original service's paths (jobs/urls.py maps
# each path and method to an action). Every action but create reads through
# get_queryset(): the requesting user's jobs, and nobody else's. (A comment,
# not a docstring: drf-spectacular would print a docstring in every operation.)
class JobViewSet(viewsets.GenericViewSet):
    lookup_url_kwarg = "job_id"
    pagination_class = VideoCursorPagination
    metadata_class = WithoutFields

    @property
    def throttle_kind(self) -> str:
        # Which rate limit applies (jobs.auth): submits have their own.
        return "submit" if self.action == "create" else "read"

    def requested_user_id(self) -> str | None:
        # Cancel is a POST: user_id may come in a JSON body too, where a POST's fields usually go.
        allowed = VIDEOS_PARAMS if self.action == "list" else USER_ID_PARAMS
        return requested_user_id(self.request, allowed=allowed, body=self.action == "cancel")

    def get_queryset(self) -> JobQuerySet:
        if getattr(self, "swagger_fake_view", False):
            # drf-spectacular asks while it writes the schema, with no real request.
            return VideoGenerationJob.objects.none()
        return VideoGenerationJob.objects.for_user(self.requested_user_id())

    def get_object(self) -> VideoGenerationJob:
        """
        get_queryset() filtered by the id in the URL, as DRF's get_object()
        does, but read with VideoGenerationJob.objects.visible(): the same
        for_user() filter, its SQL compiled once per process, so a status
        poll (the most frequent request) costs one query and no compiling
        (issue 13). A missing job, a malformed id and another user's job are
        the same 404.
        """
        user_id = self.requested_user_id()
        try:
            pk = uuid.UUID(str(self.kwargs[self.lookup_url_kwarg]))
        except ValueError:
            raise exceptions.NotFound(NO_SUCH_JOB)
        job = VideoGenerationJob.objects.visible(user_id, pk)
        if job is None:
            raise exceptions.NotFound(NO_SUCH_JOB)
        self.check_object_permissions(self.request, job)
        return job

    def perform_content_negotiation(self, request, force=False):
        job_file = JOB_FILES.get(self.action)
        if job_file is None:
            return super().perform_content_negotiation(request, force)
        # The API's renderers plus the file's type; only here, not in
        # get_renderers(), so nothing else (the schema, ?format=) sees it.
        # Whichever wins, errors (404, 409, ...) are JSON (jobs.exceptions).
        renderers = [*self.get_renderers(), _FileType(job_file.content_type)]
        try:
            self.get_content_negotiator().select_renderer(request, renderers, self.format_kwarg)
        except exceptions.NotAcceptable:
            if force:
                return renderers[0], renderers[0].media_type
            raise
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        operation_id="generate",
        request=GenerationRequest,
        parameters=[schema.IDEMPOTENCY_KEY],
        responses={
            202: SubmissionSerializer,
            200: OpenApiResponse(SubmissionSerializer, description="The job this Idempotency-Key created."),
            422: schema.ERROR,
            429: schema.ERROR,
            **schema.COMMON_ERRORS,
        },
    )
    def create(self, request):
        key = idempotency_key(request)
        query_user_id = requested_user_id(request, scoped=False)
        if query_user_id is not None:
            check_submit_user(request, query_user_id)
        serializer = GenerationRequest(data=submit_user_id(request, request.data))
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        check_submit_user(request, data["user_id"])
        if query_user_id is not None and query_user_id != data["user_id"]:
            raise exceptions.ValidationError({"user_id": [USER_ID_DIFFERS]})
        try:
            job, created = job_create(
                user_id=data["user_id"],
                params=generation_params(data),
                idempotency_key=key,
                fingerprint=request_fingerprint(data) if key else "",
                webhook_url=data.get("webhook_url", ""),
                webhook_events=data.get("webhook_events"),
            )
        except IdempotencyKeyReused as exc:
            raise ApiError(422, str(exc)) from exc
        except ActiveJobLimitReached as exc:
            # A job takes minutes: no sooner than this will one of them have finished.
            raise ApiError(429, str(exc), wait=30) from exc
        body = SubmissionSerializer(job, context={"request": request}).data
        location = request.build_absolute_uri(f"/api/v1/job/{job.id}")
        return Response(
            body,
            status=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK,
            headers={"Location": location},
        )

    @extend_schema(
        operation_id="job_status",
        parameters=[schema.USER_ID],
        responses={200: JobStatusSerializer, **schema.COMMON_ERRORS},
    )
    def retrieve(self, request, job_id):
        return Response(JobStatusSerializer(self.get_object(), context={"request": request}).data)

    @extend_schema(
        operation_id="job_delete",
        parameters=[schema.USER_ID],
        responses={204: None, **schema.COMMON_ERRORS},
        description="Delete the job, its files and its webhook events; an active job is cancelled first.",
    )
    def destroy(self, request, job_id):
        job = self.get_object()
        try:
            deleted = job_delete(job)
        except StorageUnavailable as exc:
            logger.exception("job=%s user_id=%s: storage unavailable deleting its files", job.id, job.user_id)
            raise ApiError(
                503, "The file storage is unavailable; the job was not deleted. Try again shortly.", wait=RETRY_SOON
            ) from exc
        if not deleted:
            # Deleted by another request meanwhile: as if it never was.
            raise exceptions.NotFound(NO_SUCH_JOB)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        operation_id="videos",
        parameters=[
            schema.USER_ID,
            OpenApiParameter("cursor", str, description="From a previous page's next or previous link."),
            OpenApiParameter("page_size", int, description="At most VIDEOGEN_MAX_PAGE_SIZE (default 100)."),
        ],
        responses={200: schema.VideoListSerializer, **schema.COMMON_ERRORS},
    )
    def list(self, request):
        page = self.paginate_queryset(self.get_queryset().completed_videos())
        return self.get_paginated_response(VideoInfo(page, many=True, context={"request": request}).data)

    @extend_schema(
        operation_id="cancel",
        request=None,
        parameters=[schema.USER_ID],
        responses={200: JobSerializer, 409: schema.ERROR, **schema.COMMON_ERRORS},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, job_id):
        job = self.get_object()
        if not job_cancel(job):
            job.refresh_from_db()
            raise ApiError(
                409,
                f"The job is {job.status}; only pending or running jobs can be cancelled.",
                job_id=str(job.id),
                status=job.status,
            )
        return Response(JobSerializer(job, context={"request": request}).data)

    @extend_schema(
        operation_id="download", parameters=[schema.USER_ID], responses=schema.file_responses(JOB_FILES["download"].content_type)
    )
    @action(detail=True)
    def download(self, request, job_id):
        return self.send_file(JOB_FILES["download"])

    @extend_schema(
        operation_id="poster", parameters=[schema.USER_ID], responses=schema.file_responses(JOB_FILES["poster"].content_type)
    )
    @action(detail=True)
    def poster(self, request, job_id):
        return self.send_file(JOB_FILES["poster"])

    @extend_schema(
        operation_id="preview", parameters=[schema.USER_ID], responses=schema.file_responses(JOB_FILES["preview"].content_type)
    )
    @action(detail=True)
    def preview(self, request, job_id):
        return self.send_file(JOB_FILES["preview"])

    def send_file(self, job_file: JobFile):
        job = self.get_object()
        if job.status != Status.COMPLETED:
            raise ApiError(
                409,
                f"The job is {job.status}; its video can be downloaded once it is completed.",
                job_id=str(job.id),
                status=job.status,
            )
        if job.expired_at is not None:
            raise ApiError(
                410,
                f"This video expired on {job.expired_at:%Y-%m-%d}: this server keeps videos for a limited time "
                "after they are made, and its files were removed.",
                job_id=str(job.id),
                expired_at=job.expired_at.isoformat(),
            )
        stored = getattr(job, job_file.field_name)
        if not stored:
            # Jobs completed before previews (or posters) existed have none.
            raise ApiError(410, "This job has no such file: it was never stored.", job_id=str(job.id))
        filename = f"{job.id}.{stored.name.rsplit('.', 1)[-1]}"
        try:
            if redirects_to_storage(stored):
                return _redirect(presigned_url(stored, content_type=job_file.content_type, filename=filename))
            return file_response(self.request, open_stored(stored), content_type=job_file.content_type, filename=filename)
        except Missing as exc:
            logger.error("completed but %s is missing", stored.name, extra=log_fields(job))
            raise ApiError(410, "The job completed but its file is no longer stored.", job_id=str(job.id)) from exc
        except StorageUnavailable as exc:
            logger.exception("storage unavailable reading %s", stored.name, extra=log_fields(job))
            raise ApiError(503, "The file storage is unavailable; try again shortly.", wait=RETRY_SOON) from exc


def _redirect(url: str) -> JsonResponse:
    response = JsonResponse({"url": url, "expires_in": settings.VIDEOGEN_S3_URL_EXPIRY}, status=302)
    response["Location"] = url
    # The URL expires: never let a cache replay this answer after it has.
    response["Cache-Control"] = "no-store"
    return response


class ModelsView(APIView):
    @extend_schema(operation_id="models", responses={200: schema.ModelListSerializer, **schema.COMMON_ERRORS})
    def get(self, request):
        return Response(
            {
                "default": settings.VIDEOGEN_DEFAULT_MODEL,
                "models": [spec.public() for spec in served_models().values()],
            }
        )


class HealthView(APIView):
    # Load balancers and orchestrators probe it: no key, no rate limit.
    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_kind = None

    @extend_schema(
        operation_id="health",
        responses={200: schema.HealthSerializer, 503: schema.HealthSerializer, **schema.COMMON_ERRORS},
    )
    def get(self, request):
        checks = {"database": _check_database(), "broker": _check_broker()}
        healthy = all(check == "ok" for check in checks.values())
        return Response(
            {"status": "healthy" if healthy else "unhealthy", "checks": checks},
            status=status.HTTP_200_OK if healthy else status.HTTP_503_SERVICE_UNAVAILABLE,
        )


# What /health says of a check that failed. The exception's own text names
# hosts, ports and file paths, so it goes to the log, never to the client.
UNAVAILABLE = "unavailable"


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception:
        logger.warning("health: the database does not answer", exc_info=True)
        return UNAVAILABLE


def _check_broker() -> str:
    try:
        broker = queue_broker(None)
        if settings.REDIS_URL:
            broker.ping()
        else:
            # The ORM broker's ping() always says yes, and its queue_size()
            # counts the whole backlog (as wake-ups piled up in bench/api.py,
            # /health's database CPU grew two- to threefold): ask its table
            # for one row instead.
            broker.get_connection().filter(key=broker.list_key).exists()
        return "ok"
    except Exception:
        logger.warning("health: the broker does not answer", exc_info=True)
        return UNAVAILABLE


def metrics_view(request):
    """Prometheus' scrape (VIDEOGEN_METRICS=true); a bearer VIDEOGEN_METRICS_TOKEN when one is set."""
    token = settings.VIDEOGEN_METRICS_TOKEN
    if token:
        given = request.META.get("HTTP_AUTHORIZATION", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return error_response(
                ApiError(
                    401,
                    "This endpoint needs the metrics token: Authorization: Bearer <token>.",
                    headers={"WWW-Authenticate": 'Bearer realm="videogen-metrics"'},
                )
            )
    if request.method not in ("GET", "HEAD"):
        return error_response(ApiError(405, "Only GET."))
    return HttpResponse(render(), content_type="text/plain; version=0.0.4; charset=utf-8")
