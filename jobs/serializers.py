"""
Request and response shapes. Every response is a superset of the original
FastAPI service's (api/schemas.py there), so its clients keep working.
"""

import datetime
import re
import unicodedata

from django.conf import settings
from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from generation.params import (
    FPS_RANGE,
    FRAMES_RANGE,
    GUIDANCE_RANGE,
    SEED_RANGE,
    STEPS_RANGE,
    GenerationParams,
    PARAM_NAMES,
    defaults,
    param_errors,
)
from jobs.deployment import served_models
from jobs.estimates import estimated_completion_at, queue_standing
from jobs.models import DEFAULT_WEBHOOK_EVENTS, WEBHOOK_STATUSES, ErrorCode, Status, VideoGenerationJob
from jobs.webhooks import RefusedURL, check_url

USER_ID_MAX_LENGTH = 100
MAX_WEBHOOK_URL_LENGTH = 2000
WEBHOOK_EVENT_CHOICES = [status.value for status in WEBHOOK_STATUSES]

STATUS_MESSAGES = {
    Status.PENDING: "Job is pending",
    Status.RUNNING: "Job is running",
    Status.COMPLETED: "Job completed successfully",
    Status.CANCELLED: "Job was cancelled",
}


def has_control_characters(value: str) -> bool:
    return any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in value)


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers and booleans instead of stringifying them."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictNumberMixin:
    """JSON's true and false are not numbers, though Python's bool is an int (float(True) is 1.0)."""

    def to_internal_value(self, data):
        if isinstance(data, bool):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(StrictNumberMixin, serializers.IntegerField):
    pass


class StrictFloatField(StrictNumberMixin, serializers.FloatField):
    pass


# A Hugging Face repo id ("THUDM/CogVideoX-2b"); anything else in a run's
# `source` is a path on a worker or the dotted path of a builder function.
HUB_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+")


def public_run_info(run_info: dict) -> dict:
    """
    run_info as clients see it: the weights' source only when it is a public
    repo id, and no error_detail (raw exception text). The admin shows it all.
    """
    public = dict(run_info)
    source = public.get("source")
    public.pop("error_detail", None)
    if source is not None and not (isinstance(source, str) and HUB_REPO_ID.fullmatch(source) and ".." not in source):
        del public["source"]
    return public


class PublicRunInfoField(serializers.JSONField):
    def to_representation(self, value):
        return super().to_representation(public_run_info(value) if isinstance(value, dict) else value)


def validate_user_id(value: str) -> str:
    if has_control_characters(value):
        raise serializers.ValidationError("user_id must not contain control characters.")
    return value


class CopiesDeclaredFields:
    """
    A serializer whose fields are shallow copies of the declared ones. DRF
    deep-copies them for every instance, which runs each field's __init__
    again: 200 µs of a submit's ~2.6 ms of CPU (bench/RESULTS.md, hot
    paths). A plain field keeps nothing of a request once built (bind()
    sets its name and parent on the copy), so a shallow copy is the same
    field; a list's child is copied and given the copy as its parent. Nested
    serializers hold their data and errors, so they are refused.
    """

    def get_fields(self) -> dict:
        return {name: _copy_field(field) for name, field in self._declared_fields.items()}


def _copy_field(field: serializers.Field) -> serializers.Field:
    if isinstance(field, serializers.BaseSerializer):
        raise TypeError(f"{field!r} is a serializer: DRF's deep copy is needed")
    # copy.copy() without its generic protocol (half the cost): a field is its __dict__.
    copied = object.__new__(type(field))
    copied.__dict__.update(field.__dict__)
    if isinstance(field, (serializers.ListField, serializers.DictField)):
        # The declared child is bound to the declared list already: the same name, another parent.
        copied.child = _copy_field(field.child)
        copied.child.parent = copied
    return copied


class GenerationRequest(CopiesDeclaredFields, serializers.Serializer):
    user_id = StrictCharField(max_length=USER_ID_MAX_LENGTH, validators=[validate_user_id])
    prompt = StrictCharField(max_length=settings.VIDEOGEN_MAX_PROMPT_LENGTH)
    negative_prompt = StrictCharField(
        required=False, allow_blank=True, default="", max_length=settings.VIDEOGEN_MAX_PROMPT_LENGTH
    )
    model = StrictCharField(required=False)
    # Defaults come from the chosen model (see validate); these bounds are the
    # original API's, and a model's own bounds may be tighter.
    fps = StrictIntegerField(required=False, min_value=FPS_RANGE[0], max_value=FPS_RANGE[1])
    num_frames = StrictIntegerField(required=False, min_value=FRAMES_RANGE[0], max_value=FRAMES_RANGE[1])
    width = StrictIntegerField(required=False, min_value=1)
    height = StrictIntegerField(required=False, min_value=1)
    num_inference_steps = StrictIntegerField(
        required=False, min_value=STEPS_RANGE[0], max_value=STEPS_RANGE[1]
    )
    guidance_scale = StrictFloatField(
        required=False, min_value=GUIDANCE_RANGE[0], max_value=GUIDANCE_RANGE[1]
    )
    seed = StrictIntegerField(
        required=False, allow_null=True, default=None, min_value=SEED_RANGE[0], max_value=SEED_RANGE[1]
    )
    num_videos_per_prompt = StrictIntegerField(required=False, default=1, min_value=1)
    webhook_url = StrictCharField(
        required=False,
        max_length=MAX_WEBHOOK_URL_LENGTH,
        help_text="Called with a signed Standard Webhooks POST on the job's events: https, a public host.",
    )
    webhook_events = serializers.ListField(
        child=serializers.ChoiceField(choices=WEBHOOK_EVENT_CHOICES),
        required=False,
        allow_empty=False,
        help_text="Which events to send; default completed, failed and cancelled.",
    )

    def validate_webhook_url(self, value: str) -> str:
        if not settings.VIDEOGEN_WEBHOOK_SECRET:
            raise serializers.ValidationError("This server sends no webhooks (VIDEOGEN_WEBHOOK_SECRET is unset).")
        try:
            check_url(value)
        except RefusedURL as exc:
            raise serializers.ValidationError(str(exc))
        return value

    def validate_webhook_events(self, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    def validate_num_videos_per_prompt(self, value: int) -> int:
        if value != 1:
            raise serializers.ValidationError(
                "Each job makes one video: submit several jobs to get several videos for one prompt."
            )
        return value

    def validate_model(self, value: str) -> str:
        models = served_models()
        if value not in models:
            raise serializers.ValidationError(
                f"Unknown model {value!r}. This server serves: {', '.join(models)}."
            )
        return value

    def validate(self, data: dict) -> dict:
        models = served_models()
        data.setdefault("model", settings.VIDEOGEN_DEFAULT_MODEL)
        spec = models[data["model"]]
        for name, value in defaults(spec).items():
            data.setdefault(name, value)
        errors: dict[str, list[str]] = {}
        if "webhook_url" in data:
            data.setdefault("webhook_events", list(DEFAULT_WEBHOOK_EVENTS))
        elif "webhook_events" in data:
            errors["webhook_events"] = ["webhook_events needs a webhook_url to send them to."]
        errors.update(param_errors(spec, generation_params(data)))
        if not errors:
            errors = memory_errors(spec, data)
        if errors:
            raise serializers.ValidationError(errors)
        return data


def generation_params(data: dict) -> GenerationParams:
    """A validated request's parameters; the API's `model` is the job's model_name."""
    return GenerationParams(**{name: data["model" if name == "model_name" else name] for name in PARAM_NAMES})


def memory_errors(spec, data: dict) -> dict[str, list[str]]:
    """A request no GPU of VIDEOGEN_GPU_MEMORY_GB could hold, whatever memory options the worker turned on."""
    limit = settings.VIDEOGEN_GPU_MEMORY_GB
    plan = spec.memory_plan(data["num_frames"], data["width"], data["height"], limit) if limit else None
    if plan is None or plan.fits:
        return {}
    return {
        "num_frames": [
            f"{spec.too_large(data['num_frames'], data['width'], data['height'], plan)}; this server's GPUs "
            f"have {limit:g} GiB (VIDEOGEN_GPU_MEMORY_GB). Ask for fewer frames or a smaller size."
        ]
    }


class JobSerializer(serializers.ModelSerializer):
    """The job status response: the original's {job_id, status, message, result} and ours."""

    job_id = serializers.UUIDField(source="id", read_only=True)
    # "" until the job fails; a class from ErrorCode after.
    error_code = serializers.ChoiceField(choices=ErrorCode.choices, allow_blank=True, read_only=True)
    message = serializers.SerializerMethodField()
    result = serializers.SerializerMethodField()
    model = serializers.CharField(source="model_name")
    created_at = serializers.DateTimeField(source="submitted_at")
    video_url = serializers.SerializerMethodField()
    poster_url = serializers.SerializerMethodField()
    preview_url = serializers.SerializerMethodField()
    run_info = PublicRunInfoField(read_only=True)
    # null without a webhook; the events it sends otherwise.
    webhook_url = serializers.SerializerMethodField()
    webhook_events = serializers.ListField(child=serializers.CharField(), read_only=True)
    # When a completed job's files are (or were) removed under VIDEOGEN_RETENTION_DAYS; null: kept.
    expires_at = serializers.DateTimeField(read_only=True, allow_null=True)
    expired_at = serializers.DateTimeField(read_only=True, allow_null=True)

    class Meta:
        model = VideoGenerationJob
        fields = [
            "job_id",
            "status",
            "message",
            "result",
            "user_id",
            "progress",
            "current_step",
            "error_message",
            "error_code",
            "prompt",
            "negative_prompt",
            "model",
            "fps",
            "num_frames",
            "width",
            "height",
            "num_inference_steps",
            "guidance_scale",
            "seed",
            "attempts",
            "submitted_at",
            "created_at",
            "started_at",
            "completed_at",
            "video_url",
            "poster_url",
            "preview_url",
            "file_size_bytes",
            "video_duration_seconds",
            "run_info",
            "webhook_url",
            "webhook_events",
            "expires_at",
            "expired_at",
        ]
        read_only_fields = fields

    def to_representation(self, job: VideoGenerationJob) -> dict:
        """
        The fields declared above, written out. DRF's generic path builds
        every field object anew for each job (a ModelSerializer copies its
        declared fields and introspects the model's on every instance),
        which cost more than reading the row: 0.6 ms of a status poll
        (bench/RESULTS.md, hot paths). The declarations still define the
        shape and the OpenAPI schema; tests/jobs/test_hot_paths.py checks
        this against DRF's generic path for jobs in every state.
        """
        values = self.values(job)
        return {name: values[name] for name in self.Meta.fields}

    def values(self, job: VideoGenerationJob) -> dict:
        video_url = self.get_video_url(job)
        return {
            "job_id": str(job.id),
            "status": job.status,
            "message": self.get_message(job),
            "result": video_url,
            "user_id": job.user_id,
            "progress": job.progress,
            "current_step": job.current_step,
            "error_message": job.error_message,
            "error_code": job.error_code,
            "prompt": job.prompt,
            "negative_prompt": job.negative_prompt,
            "model": job.model_name,
            "fps": job.fps,
            "num_frames": job.num_frames,
            "width": job.width,
            "height": job.height,
            "num_inference_steps": job.num_inference_steps,
            "guidance_scale": job.guidance_scale,
            "seed": job.seed,
            "attempts": job.attempts,
            "submitted_at": _datetime(job.submitted_at),
            "created_at": _datetime(job.submitted_at),
            "started_at": _datetime(job.started_at),
            "completed_at": _datetime(job.completed_at),
            "video_url": video_url,
            "poster_url": self.get_poster_url(job),
            "preview_url": self.get_preview_url(job),
            "file_size_bytes": job.file_size_bytes,
            "video_duration_seconds": job.video_duration_seconds,
            "run_info": public_run_info(job.run_info) if isinstance(job.run_info, dict) else job.run_info,
            "webhook_url": self.get_webhook_url(job),
            "webhook_events": [str(event) for event in job.webhook_events],
            "expires_at": _datetime(job.expires_at),
            "expired_at": _datetime(job.expired_at),
        }

    def get_webhook_url(self, job: VideoGenerationJob) -> str | None:
        return job.webhook_url or None

    def get_message(self, job: VideoGenerationJob) -> str:
        if job.status == Status.FAILED:
            return f"Job failed: {job.error_message}"
        return STATUS_MESSAGES[job.status]

    def get_result(self, job: VideoGenerationJob) -> str | None:
        # The original returned the video's location once completed.
        return self.get_video_url(job)

    def get_video_url(self, job: VideoGenerationJob) -> str | None:
        if job.status != Status.COMPLETED or not job.video:
            return None
        return self._absolute(reverse("download", kwargs={"job_id": job.id}))

    def get_poster_url(self, job: VideoGenerationJob) -> str | None:
        if job.status != Status.COMPLETED or not job.poster:
            return None
        return self._absolute(reverse("poster", kwargs={"job_id": job.id}))

    def get_preview_url(self, job: VideoGenerationJob) -> str | None:
        if job.status != Status.COMPLETED or not job.preview:
            return None
        return self._absolute(reverse("preview", kwargs={"job_id": job.id}))

    def _absolute(self, path: str) -> str:
        request = self.context.get("request")
        # Outside a request (a webhook's payload), VIDEOGEN_PUBLIC_URL.
        return request.build_absolute_uri(path) if request else settings.VIDEOGEN_PUBLIC_URL + path


class JobStatusSerializer(JobSerializer):
    """GET /job: the job, and where it stands (jobs/estimates.py); null when finished or unknown."""

    queue_position = serializers.SerializerMethodField()
    estimated_start_at = serializers.SerializerMethodField()
    estimated_completion_at = serializers.SerializerMethodField()

    class Meta(JobSerializer.Meta):
        fields = [*JobSerializer.Meta.fields, "queue_position", "estimated_start_at", "estimated_completion_at"]
        read_only_fields = fields

    def values(self, job: VideoGenerationJob) -> dict:
        position, start = self._standing(job)
        return {
            **super().values(job),
            "queue_position": position,
            "estimated_start_at": _datetime(start),
            "estimated_completion_at": _datetime(estimated_completion_at(job)),
        }

    def _standing(self, job: VideoGenerationJob) -> tuple[int | None, datetime.datetime | None]:
        if not hasattr(job, "_standing"):
            job._standing = queue_standing(job)
        return job._standing

    @extend_schema_field(serializers.IntegerField(allow_null=True, min_value=1))
    def get_queue_position(self, job: VideoGenerationJob) -> int | None:
        return self._standing(job)[0]

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_estimated_start_at(self, job: VideoGenerationJob) -> str | None:
        return _datetime(self._standing(job)[1])

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_estimated_completion_at(self, job: VideoGenerationJob) -> str | None:
        return _datetime(estimated_completion_at(job))


_DATETIME = serializers.DateTimeField()


def _datetime(value: datetime.datetime | None) -> str | None:
    return None if value is None else _DATETIME.to_representation(value)


class SubmissionSerializer(JobSerializer):
    """The submit response: the original's {success, job_id, message} and the job."""

    success = serializers.SerializerMethodField()

    class Meta(JobSerializer.Meta):
        fields = ["success", *JobSerializer.Meta.fields]
        read_only_fields = fields

    def values(self, job: VideoGenerationJob) -> dict:
        return {"success": True, **super().values(job)}

    def get_success(self, job: VideoGenerationJob) -> bool:
        return True

    def get_message(self, job: VideoGenerationJob) -> str:
        if job.status == Status.PENDING:
            return "Generation job submitted successfully"
        return super().get_message(job)


class VideoInfo(JobSerializer):
    """One completed video: the original's {job_id, user_id, filename, file_size, created_at, status} and ours."""

    filename = serializers.CharField(source="video_filename")
    file_size = serializers.IntegerField(source="file_size_bytes")

    def values(self, job: VideoGenerationJob) -> dict:
        return {**super().values(job), "filename": job.video_filename, "file_size": job.file_size_bytes}

    class Meta(JobSerializer.Meta):
        fields = [
            "job_id",
            "user_id",
            "filename",
            "file_size",
            "created_at",
            "status",
            "completed_at",
            "video_url",
            "poster_url",
            "preview_url",
            "prompt",
            "model",
            "fps",
            "num_frames",
            "width",
            "height",
            "seed",
            "video_duration_seconds",
            "expires_at",
        ]
        read_only_fields = fields
