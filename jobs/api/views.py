import asyncio
import datetime
import hmac
import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from django.conf import settings
from django.db import close_old_connections, connection
from django.db.models.fields.files import FieldFile
from django.http import HttpResponse, JsonResponse, QueryDict
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, status, viewsets
from rest_framework.decorators import action
from rest_framework.metadata import SimpleMetadata
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs.api import schema
from jobs.api.auth import NO_SUCH_JOB, acting_user_id, check_submit_priority
from jobs.scheduling.deployment import served_models
from jobs.api import events
from jobs.api.exceptions import RETRY_SOON, ApiError, error_response
from jobs.services.files import Missing, StorageUnavailable, delete_files, live_preview_name, open_stored, presigned_url, redirects_to_storage
from jobs.api.http import file_response
from jobs.api.inputs import CONTENT_TYPES, IMAGE_FIELDS, store_images
from jobs.metrics.http import render
from jobs.models import (
    FINISHED, USER_ID_MAX_LENGTH, JobQuerySet, Mode, Priority, Status, VideoGenerationJob, count_up_to,
)
from jobs.representation import render_datetime
from jobs.api.serializers import (
    GenerationRequest,
    JobSerializer,
    JobStatusSerializer,
    SubmissionSerializer,
    VideoInfo,
    generation_params,
    has_control_characters,
)
from jobs.services.lifecycle import (
    ActiveJobLimitReached,
    IdempotencyKeyReused,
    JobInputs,
    broker as queue_broker,
    job_cancel,
    job_create,
    job_delete,
    request_fingerprint,
)
from videogen import handoff
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
    from a JSON body; given in both, they must agree. `scoped`: the user_id
    the request acts as (jobs.api.auth.acting_user_id), else the one named.
    """
    check_query_params(request, allowed)
    candidates = []
    if "user_id" in request.query_params:
        candidates.append(clean_user_id(request.query_params["user_id"]))
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
            candidates.append(clean_user_id(data["user_id"]))
    if len(set(candidates)) > 1:
        raise exceptions.ValidationError({"user_id": [USER_ID_DIFFERS]})
    given = candidates[0] if candidates else None
    return acting_user_id(request, given) if scoped else given


def clean_user_id(raw: str) -> str:
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
# A running job's live preview (generation/runner.py stores it under jobs.services.files.live_preview_name).
LIVE_PREVIEW = JobFile("preview", "image/jpeg")


# The input images, by the action that sends each: PNG, JPEG or WebP, as sent.
INPUT_FILES = {field: JobFile(field, "image/*") for field in IMAGE_FIELDS}

# The outputs are downloaded as <job id>.<ext>; the inputs as <job id>_<field>.<ext>.
JOB_FILES_NAMED_BY_ID = {job_file.field_name for job_file in JOB_FILES.values()}


class SubmitMultiPartParser(MultiPartParser):
    """multipart/form-data for POST /generate: file parts for image and last_image only."""

    def parse(self, stream, media_type=None, parser_context=None):
        parsed = super().parse(stream, media_type, parser_context)
        unknown = sorted(set(parsed.files) - set(IMAGE_FIELDS))
        if unknown:
            raise exceptions.ValidationError(
                {name: ["Only image and last_image may be file parts."] for name in unknown}
            )
        return parsed


def submitted_fields(request) -> dict | list | str | None:
    """
    The submit's fields as a plain object: JSON's as they are; a form's one
    value each (numbers as text, which the fields parse), webhook_events
    repeated, and its file parts. A form field given twice is a 400.
    """
    data = request.data
    if not isinstance(data, QueryDict):
        return data
    fields: dict = {}
    for name in data:
        values = data.getlist(name)
        if name == "webhook_events":
            fields[name] = values
        elif len(values) > 1:
            raise exceptions.ValidationError({name: [f"{name} must be given at most once."]})
        else:
            fields[name] = values[0]
    return fields


def fingerprinted(data: dict) -> dict:
    """
    A submit's validated fields as its Idempotency-Key fingerprint sees
    them: images by their sha256, and a text job's as before images existed
    (its mode follows from the other fields, its fit fits nothing), and one
    of normal priority as before priorities, so a retry across an upgrade
    still finds its job.
    """
    fields = {name: value.sha256 if name in IMAGE_FIELDS else value for name, value in data.items() if name != "mode"}
    if data["mode"] == Mode.TEXT_TO_VIDEO:
        del fields["image_fit"]
    if fields.get("priority") == Priority.NORMAL.label:
        del fields["priority"]
    return fields


class WithoutFields(SimpleMetadata):
    """
    OPTIONS answers without DRF's description of a serializer's fields
    ("actions"), which SimpleMetadata adds for any view with
    get_serializer(): the OpenAPI schema documents the bodies.
    """

    def determine_actions(self, request, view) -> dict:
        return {}


# The job endpoints, under the original service's paths (jobs/api/urls.py maps
# each path and method to an action). Every action but create reads through
# get_queryset(): the requesting user's jobs, and nobody else's. (A comment,
# not a docstring: drf-spectacular would print a docstring in every operation.)
class JobViewSet(viewsets.GenericViewSet):
    lookup_url_kwarg = "job_id"
    pagination_class = VideoCursorPagination
    metadata_class = WithoutFields

    @property
    def throttle_kind(self) -> str:
        # Which rate limit applies (jobs.api.auth): submits have their own.
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
        poll (the most frequent request) costs one query and no compiling.
        A missing job, a malformed id and another user's job are
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
        job_file = (
            {"events": EVENT_STREAM, "live_preview": LIVE_PREVIEW}.get(self.action)
            or JOB_FILES.get(self.action)
            or INPUT_FILES.get(self.action)
        )
        if job_file is None:
            return super().perform_content_negotiation(request, force)
        # The API's renderers plus the file's type; only here, not in
        # get_renderers(), so nothing else (the schema, ?format=) sees it.
        # Whichever wins, errors (404, 409, ...) are JSON (jobs.api.exceptions).
        renderers = [*self.get_renderers(), _FileType(job_file.content_type)]
        try:
            self.get_content_negotiator().select_renderer(request, renderers, self.format_kwarg)
        except exceptions.NotAcceptable:
            if force:
                return renderers[0], renderers[0].media_type
            raise
        return super().perform_content_negotiation(request, force=True)

    def get_parsers(self):
        # Only a submit takes files (image, last_image as multipart parts).
        # Called before DRF sets self.action, so from the route's own map.
        request = getattr(self, "request", None)
        if request is not None and self.action_map.get(request.method.lower()) == "create":
            return [*super().get_parsers(), SubmitMultiPartParser()]
        return super().get_parsers()

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
            acting_user_id(request, query_user_id, submit=True)
        fields = submitted_fields(request)
        if isinstance(fields, dict) and "user_id" not in fields:
            # A user's key may leave its user_id out; anything else without one is refused as usual.
            key_user_id = acting_user_id(request, None, submit=True)
            fields = fields if key_user_id is None else {**fields, "user_id": key_user_id}
        serializer = GenerationRequest(data=fields, context={"request": request})
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        acting_user_id(request, data["user_id"], submit=True)
        check_submit_priority(request, data["priority"])
        if query_user_id is not None and query_user_id != data["user_id"]:
            raise exceptions.ValidationError({"user_id": [USER_ID_DIFFERS]})
        images = {field: data[field] for field in IMAGE_FIELDS if field in data}
        stored = store_images(images)
        created = False
        try:
            job, created = job_create(
                user_id=data["user_id"],
                params=generation_params(data),
                inputs=JobInputs(
                    mode=data["mode"],
                    image=stored.get("image", ""),
                    last_image=stored.get("last_image", ""),
                    image_fit=data["image_fit"],
                    extend_job_id=data.get("extend_job_id"),
                    info={field: image.info() for field, image in images.items()},
                ),
                idempotency_key=key,
                fingerprint=request_fingerprint(fingerprinted(data)) if key else "",
                webhook_url=data.get("webhook_url", ""),
                webhook_events=data.get("webhook_events"),
                start_within=data.get("start_within"),
                priority=Priority.named(data["priority"]),
            )
        except IdempotencyKeyReused as exc:
            raise ApiError(422, str(exc)) from exc
        except ActiveJobLimitReached as exc:
            # A job takes minutes: no sooner than this will one of them have finished.
            raise ApiError(429, str(exc), wait=30) from exc
        finally:
            if not created:
                # Refused, or a retry answered with the first job's (which has its own copies).
                delete_files(list(stored.values()))
        location = request.build_absolute_uri(f"/api/v1/job/{job.id}")
        wait = preferred_wait(request)
        if wait is not None:

            def submitted(fresh: VideoGenerationJob) -> tuple[int, dict]:
                finished = fresh.status in FINISHED
                body = SubmissionSerializer(fresh, context={"request": request}).data
                return (status.HTTP_202_ACCEPTED if created and not finished else status.HTTP_200_OK), body

            return answer_after_wait(request, job, wait, submitted, user_id=job.user_id, headers={"Location": location})
        body = SubmissionSerializer(job, context={"request": request}).data
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
        job = self.get_object()
        wait = preferred_wait(request)
        if wait is not None:
            return answer_after_wait(
                request, job, wait, lambda fresh: (200, JobStatusSerializer(fresh, context={"request": request}).data),
                user_id=self.requested_user_id(),
            )
        return Response(JobStatusSerializer(job, context={"request": request}).data)

    @extend_schema(
        operation_id="job_events",
        parameters=[schema.USER_ID],
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                description="Server-sent events: status, progress, queue, then completed, failed or cancelled."
            ),
            204: OpenApiResponse(description="Last-Event-ID is the finished job's terminal event: nothing follows."),
            **schema.COMMON_ERRORS,
        },
        description="The job's events as they happen (docs/events.md). Last-Event-ID resumes after that event.",
    )
    @action(detail=True)
    def events(self, request, job_id):
        job = self.get_object()
        last_id = events.parse_event_id(request.headers.get("Last-Event-ID"))
        base = base_url(request)
        first = events.snapshot(job, base)
        if last_id is not None and first.finished and last_id >= first.terminal_id:
            # The client has the terminal event: 204 tells an EventSource not to reconnect.
            return Response(status=status.HTTP_204_NO_CONTENT)
        check_watchers()
        response = handoff.HandOff(
            lambda output: events.stream(output, job.pk, base, first, last_id), content_type=events.STREAM_HEADERS["Content-Type"]
        )
        for name, value in events.STREAM_HEADERS.items():
            response[name] = value
        return response

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
            logger.exception("storage unavailable deleting its files", extra=log_fields(job))
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

    @extend_schema(operation_id="image", parameters=[schema.USER_ID], responses=schema.file_responses("image/*"))
    @action(detail=True)
    def image(self, request, job_id):
        return self.send_input("image")

    @extend_schema(operation_id="last_image", parameters=[schema.USER_ID], responses=schema.file_responses("image/*"))
    @action(detail=True)
    def last_image(self, request, job_id):
        return self.send_input("last_image")

    def send_input(self, field: str):
        """An input image as the client sent it; kept from submit until the job is deleted or expires."""
        job = self.get_object()
        stored = getattr(job, field)
        if not stored:
            if job.expired_at is not None:
                raise ApiError(410, "This job's files expired and were removed.", job_id=str(job.id))
            raise ApiError(404, f"This job has no {field}.", job_id=str(job.id))
        image_format = (job.inputs.get(field) or {}).get("format", "")
        return self.send_stored(job, stored, JobFile(field, CONTENT_TYPES.get(image_format, "application/octet-stream")))

    @extend_schema(
        operation_id="live_preview", parameters=[schema.USER_ID], responses=schema.file_responses(LIVE_PREVIEW.content_type),
        description="A running job's current latents as a small JPEG, redrawn every VIDEOGEN_PREVIEW_EVERY steps.",
    )
    @action(detail=True)
    def live_preview(self, request, job_id):
        job = self.get_object()
        if job.status != Status.RUNNING:
            raise ApiError(409, f"The job is {job.status}; a live preview exists only while it runs.",
                           job_id=str(job.id), status=job.status)
        stored = FieldFile(job, VideoGenerationJob._meta.get_field(LIVE_PREVIEW.field_name), live_preview_name(job.id))
        try:
            response = file_response(request, open_stored(stored), content_type=LIVE_PREVIEW.content_type,
                                     filename=f"{job.id}-live.jpg")
        except Missing as exc:
            raise ApiError(404, "This job has no live preview yet.", job_id=str(job.id)) from exc
        except StorageUnavailable as exc:
            raise ApiError(503, "The file storage is unavailable; try again shortly.", wait=RETRY_SOON) from exc
        # Redrawn as the job runs: never from a cache.
        response["Cache-Control"] = "no-store"
        return response

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
                expired_at=render_datetime(job.expired_at),
            )
        stored = getattr(job, job_file.field_name)
        if not stored:
            # Jobs completed before previews (or posters) existed have none.
            raise ApiError(410, "This job has no such file: it was never stored.", job_id=str(job.id))
        return self.send_stored(job, stored, job_file)

    def send_stored(self, job: VideoGenerationJob, stored, job_file: JobFile):
        suffix = "" if job_file.field_name in JOB_FILES_NAMED_BY_ID else f"_{job_file.field_name}"
        filename = f"{job.id}{suffix}.{stored.name.rsplit('.', 1)[-1]}"
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


EVENT_STREAM = JobFile("", "text/event-stream")


def base_url(request) -> str:
    return request.build_absolute_uri("/")[:-1]


def check_watchers() -> None:
    try:
        events.reserve()
    except events.TooManyWatchers as exc:
        raise ApiError(503, "This server holds as many event streams and waiting requests as it may; try again shortly.",
                       wait=RETRY_SOON) from exc


def preferred_wait(request) -> int | None:
    """
    The seconds of a `Prefer: wait=N` (RFC 7240), capped at VIDEOGEN_MAX_WAIT;
    None without one. A preference this server does not understand is
    ignored, as the RFC asks.
    """
    for header in request.headers.get("Prefer", "").split(","):
        for preference in header.split(";"):
            name, _, value = preference.strip().partition("=")
            value = value.strip().strip('"')
            if name.strip().lower() == "wait" and value.isascii() and value.isdigit():
                return min(int(value[:6]), settings.VIDEOGEN_MAX_WAIT)
    return None


# Renders waiting answers once they are due; a few threads, since each render is one short read.
_renderers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="videogen-wait")
# Where an answer cannot leave its thread (not under videogen.handoff.Worker), at most this many wait at once per process.
HELD_WAITERS = 4
_held_waiters = threading.BoundedSemaphore(HELD_WAITERS)


def answer_after_wait(
    request,
    job: VideoGenerationJob,
    seconds: int,
    render: Callable[[VideoGenerationJob], tuple[int, dict]],
    *,
    user_id: str | None,
    headers: dict[str, str] | None = None,
):
    """
    `render(job)`'s answer once the job is finished or `seconds` have passed,
    re-read then as `user_id` sees it (None: every user); a job deleted
    meanwhile is the usual 404. Under our gunicorn worker the wait holds no
    thread (videogen.handoff).
    """
    headers = {**(headers or {}), "Preference-Applied": f"wait={seconds}"}

    def fresh() -> tuple[int, dict]:
        try:
            found = VideoGenerationJob.objects.visible(user_id, job.pk)
            if found is None:
                return 404, {"detail": NO_SUCH_JOB}
            return render(found)
        finally:
            close_old_connections()

    if job.status in FINISHED or seconds == 0:
        code, body = render(job)
        return Response(body, status=code, headers=headers)
    base = base_url(request)
    first = events.snapshot(job, base)
    if handoff.moves_connection(request):
        check_watchers()

        async def run(output: handoff.Output) -> None:
            await events.wait_finished(job.pk, base, first, seconds, output.gone)
            code, body = await asyncio.get_running_loop().run_in_executor(_renderers, fresh)
            data = JSONRenderer().render(body)
            await output.start(code, {**headers, "Content-Type": "application/json", "Content-Length": str(len(data))})
            await output.write(data)

        return handoff.HandOff(run, content_type="application/json")
    if not _held_waiters.acquire(blocking=False):
        # Past the bound the answer comes at once, saying so by its missing Preference-Applied.
        code, body = render(job)
        return Response(body, status=code, headers={k: v for k, v in headers.items() if k != "Preference-Applied"})
    try:
        asyncio.run_coroutine_threadsafe(
            events.wait_finished(job.pk, base, first, seconds, None), handoff.loop()
        ).result()
    finally:
        _held_waiters.release()
    code, body = fresh()
    return Response(body, status=code, headers=headers)


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
                ),
                request,
            )
    if request.method not in ("GET", "HEAD"):
        return error_response(ApiError(405, "Only GET."), request)
    return HttpResponse(render(), content_type="text/plain; version=0.0.4; charset=utf-8")
