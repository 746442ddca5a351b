"""
Request and response shapes. Every response is a superset of the original
FastAPI service's (api/schemas.py there), so its clients keep working.
"""

import dataclasses
import unicodedata

from django.conf import settings
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
)
from generation.images import IMAGE_FITS
from generation.registry import ModelSpec
from jobs.api.auth import acting_user_id
from jobs.scheduling.deployment import served_models
from jobs.api.exceptions import ApiError
from jobs.api.inputs import IMAGE_FIELDS, ImageInput, read_image
from jobs.models import (
    DEFAULT_WEBHOOK_EVENTS,
    MAX_URL_LENGTH,
    USER_ID_MAX_LENGTH,
    WEBHOOK_STATUSES,
    ErrorCode,
    Mode,
    Priority,
    Status,
    VideoGenerationJob,
)
from jobs.representation import (
    JOB_FIELDS, JOB_STATUS_FIELDS, SUBMISSION_FIELDS, VIDEO_FIELDS, job_representation, public_run_info,
)
from jobs.services.outbound import RefusedURL
from jobs.webhooks.sending import check_url

WEBHOOK_EVENT_CHOICES = [status.value for status in WEBHOOK_STATUSES]

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
    again, a sizeable share of a submit's CPU (bench/RESULTS.md, hot
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


@extend_schema_field(
    {
        "type": "string",
        "description": "An image: a file part (multipart/form-data), or in JSON a data:image/...;base64, URI or an "
        "https:// URL. PNG, JPEG or WebP, one frame, at most VIDEOGEN_MAX_IMAGE_BYTES.",
    }
)
class ImageInputField(serializers.Field):
    """An input image, read and checked whole (jobs.api.inputs.read_image)."""

    def to_internal_value(self, data) -> ImageInput:
        return read_image(self.field_name, data)

    def to_representation(self, value):
        raise NotImplementedError("input images are shown as links (image_url)")


class PriorityField(serializers.ChoiceField):
    """A priority by its name (low, normal, high), the stored Priority's label."""

    def __init__(self, **kwargs):
        super().__init__(choices=[priority.label for priority in Priority], **kwargs)

    def to_representation(self, value) -> str:
        return Priority(value).label


# The generation mode an extend runs: the source's last frame is its first.
EXTEND_RUNS_AS = Mode.IMAGE_TO_VIDEO


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
        max_length=MAX_URL_LENGTH,
        help_text="Called with a signed Standard Webhooks POST on the job's events: https, a public host.",
    )
    webhook_events = serializers.ListField(
        child=serializers.ChoiceField(choices=WEBHOOK_EVENT_CHOICES),
        required=False,
        allow_empty=False,
        help_text="Which events to send; default completed, failed and cancelled.",
    )

    start_within = StrictIntegerField(
        required=False,
        min_value=1,
        max_value=86400,
        help_text="Seconds: a job that has not started by then is cancelled (error_code deadline_exceeded).",
    )
    priority = PriorityField(
        required=False,
        default=Priority.NORMAL.label,
        help_text="Which waiting jobs run first: low, normal or high (with API keys, high needs the key's "
        "priority scope). A high job that waits VIDEOGEN_PREEMPT_AFTER seconds preempts lower work.",
    )
    image = ImageInputField(required=False, help_text="The first frame.")
    last_image = ImageInputField(required=False, help_text="The last frame (first-last-frame); needs image.")
    extend_job_id = serializers.UUIDField(
        required=False, help_text="A completed job of this user whose video this job continues from its last frame."
    )
    image_fit = serializers.ChoiceField(
        choices=IMAGE_FITS,
        default=IMAGE_FITS[0],
        help_text="How an image of another aspect ratio becomes width x height: crop (cover, centre-crop), pad or stretch.",
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
        source = self._extended_job(data)
        data["mode"] = request_mode(data)
        spec = self._spec(data, source)
        _size_for_inputs(spec, data, source)
        for name, value in spec.defaults().items():
            data.setdefault(name, value)
        errors: dict[str, list[str]] = {}
        if "webhook_url" in data:
            data.setdefault("webhook_events", list(DEFAULT_WEBHOOK_EVENTS))
        elif "webhook_events" in data:
            errors["webhook_events"] = ["webhook_events needs a webhook_url to send them to."]
        errors.update(_extend_errors(data, source))
        errors.update(spec.param_errors(generation_params(data, frames_to_make(data))))
        if not errors:
            errors = memory_errors(spec, data)
        if errors:
            raise serializers.ValidationError(errors)
        return data

    def _extended_job(self, data: dict) -> VideoGenerationJob | None:
        """The completed job of this user that extend_job_id names; any other is refused the same way."""
        if "extend_job_id" not in data:
            if "last_image" in data and "image" not in data:
                raise serializers.ValidationError({"last_image": ["last_image needs image, the first frame."]})
            return None
        for field in IMAGE_FIELDS:
            if field in data:
                raise serializers.ValidationError(
                    {field: [f"{field} cannot be combined with extend_job_id: an extend starts from its video's last frame."]}
                )
        request = self.context.get("request")
        if request is not None:
            # Before the look-up: a key must not learn anything of another user's jobs.
            acting_user_id(request, data["user_id"], submit=True)
        source = VideoGenerationJob.objects.for_user(data["user_id"]).filter(pk=data["extend_job_id"]).first()
        if source is None:
            raise serializers.ValidationError({"extend_job_id": ["No such job of this user_id."]})
        if source.status != Status.COMPLETED:
            raise ApiError(
                409,
                f"The job to extend is {source.status}; only a completed job's video can be extended.",
                errors={"extend_job_id": [f"The job is {source.status}, not completed."]},
                job_id=str(source.id),
                status=source.status,
            )
        if source.expired_at is not None or not source.video:
            raise serializers.ValidationError({"extend_job_id": ["That job's video is no longer stored."]})
        return source

    def _spec(self, data: dict, source: VideoGenerationJob | None) -> ModelSpec:
        """
        The model: the one asked for, which must do the request's mode. Left
        out: the job extended's model, or the default model, or else the
        first served model that does the mode.
        """
        models = served_models()
        mode = EXTEND_RUNS_AS if data["mode"] == Mode.EXTEND else data["mode"]
        able = [name for name, spec in models.items() if mode in spec.modes]
        if "model" in data:
            if mode not in models[data["model"]].modes:
                raise serializers.ValidationError(
                    {"model": [f"Model {data['model']} cannot do {mode}. " + _models_that_can(mode, able)]}
                )
            return models[data["model"]]
        preferred = [source.model_name] if source is not None else []
        for name in [*preferred, settings.VIDEOGEN_DEFAULT_MODEL, *able]:
            if name in able:
                data["model"] = name
                return models[name]
        field = "extend_job_id" if data["mode"] == Mode.EXTEND else "image"
        raise serializers.ValidationError({field: [_models_that_can(mode, able)]})


def _models_that_can(mode: str, able: list[str]) -> str:
    if not able:
        return f"No model this server serves can do {mode}."
    return f"Models that can: {', '.join(able)}."


def request_mode(data: dict) -> str:
    if "extend_job_id" in data:
        return Mode.EXTEND
    if "last_image" in data:
        return Mode.FIRST_LAST_FRAME
    if "image" in data:
        return Mode.IMAGE_TO_VIDEO
    return Mode.TEXT_TO_VIDEO


def frames_to_make(data: dict) -> int:
    """Frames the model makes: an extend makes one more, its first the extended video's last, and drops it."""
    return data["num_frames"] + 1 if data["mode"] == Mode.EXTEND else data["num_frames"]


def _size_for_inputs(spec: ModelSpec, data: dict, source: VideoGenerationJob | None) -> None:
    """
    An extend takes its video's size and frame rate; a request with an image
    and neither width nor height gets the image's aspect ratio at the
    model's default area.
    """
    if source is not None:
        for name in ("width", "height", "fps"):
            data.setdefault(name, getattr(source, name))
    elif "image" in data and "width" not in data and "height" not in data:
        data["width"], data["height"] = spec.size_for_aspect(data["image"].width, data["image"].height)


def _extend_errors(data: dict, source: VideoGenerationJob | None) -> dict[str, list[str]]:
    if source is None:
        return {}
    return {
        name: [f"An extend keeps its video's {name}, {getattr(source, name)}; leave {name} out or give that."]
        for name in ("width", "height", "fps")
        if data[name] != getattr(source, name)
    }


def generation_params(data: dict, num_frames: int | None = None) -> GenerationParams:
    """A validated request's parameters; the API's `model` is the job's model_name."""
    params = GenerationParams(**{name: data["model" if name == "model_name" else name] for name in PARAM_NAMES})
    return params if num_frames is None else dataclasses.replace(params, num_frames=num_frames)


def memory_errors(spec, data: dict) -> dict[str, list[str]]:
    """A request no GPU of VIDEOGEN_GPU_MEMORY_GB could hold, whatever memory options the worker turned on."""
    limit = settings.VIDEOGEN_GPU_MEMORY_GB
    frames = frames_to_make(data)
    plan = spec.memory_plan(frames, data["width"], data["height"], limit) if limit else None
    if plan is None or plan.fits:
        return {}
    return {
        "num_frames": [
            f"{spec.too_large(frames, data['width'], data['height'], plan)}; this server's GPUs "
            f"have {limit:g} GiB (VIDEOGEN_GPU_MEMORY_GB). Ask for fewer frames or a smaller size."
        ]
    }


# These serializers only describe the schema: jobs.representation writes the
# job (job_representation), because DRF's generic path builds every field
# object anew for each job, which cost more than reading the row
# (bench/RESULTS.md, hot paths). The docstrings are the schema's.
class JobSerializer(serializers.ModelSerializer):
    """The job status response: the original's {job_id, status, message, result} and ours."""

    job_id = serializers.UUIDField(source="id", read_only=True)
    # "" until the job fails; a class from ErrorCode after.
    error_code = serializers.ChoiceField(choices=ErrorCode.choices, allow_blank=True, read_only=True)
    message = serializers.CharField(read_only=True)
    result = serializers.CharField(read_only=True, allow_null=True)
    model = serializers.CharField(source="model_name")
    created_at = serializers.DateTimeField(source="submitted_at")
    video_url = serializers.CharField(read_only=True, allow_null=True)
    poster_url = serializers.CharField(read_only=True, allow_null=True)
    preview_url = serializers.CharField(read_only=True, allow_null=True)
    run_info = PublicRunInfoField(read_only=True)
    # null without a webhook; the events it sends otherwise.
    webhook_url = serializers.CharField(read_only=True, allow_null=True)
    webhook_events = serializers.ListField(child=serializers.CharField(), read_only=True)
    # When a completed job's files are (or were) removed under VIDEOGEN_RETENTION_DAYS; null: kept.
    expires_at = serializers.DateTimeField(read_only=True, allow_null=True)
    expired_at = serializers.DateTimeField(read_only=True, allow_null=True)
    # The inputs besides the prompt; the images' links are null when there is none.
    image_url = serializers.CharField(read_only=True, allow_null=True)
    last_image_url = serializers.CharField(read_only=True, allow_null=True)
    extend_job_id = serializers.UUIDField(read_only=True, allow_null=True)
    # start_within's deadline while the job has not started; null once it has, or without one.
    start_deadline_at = serializers.DateTimeField(read_only=True, allow_null=True)
    priority = PriorityField(read_only=True)

    class Meta:
        model = VideoGenerationJob
        fields = JOB_FIELDS
        read_only_fields = fields

    def to_representation(self, job: VideoGenerationJob) -> dict:
        return job_representation(job, self.Meta.fields, request=self.context.get("request"))


class JobStatusSerializer(JobSerializer):
    """GET /job: the job, and where it stands (jobs/scheduling/estimates.py); null when finished or unknown."""

    queue_position = serializers.IntegerField(read_only=True, allow_null=True, min_value=1)
    estimated_start_at = serializers.DateTimeField(read_only=True, allow_null=True)
    estimated_completion_at = serializers.DateTimeField(read_only=True, allow_null=True)
    # A running job's latest latents as a small image (docs/events.md); null otherwise.
    live_preview_url = serializers.URLField(read_only=True, allow_null=True)

    class Meta(JobSerializer.Meta):
        fields = JOB_STATUS_FIELDS
        read_only_fields = fields


class SubmissionSerializer(JobSerializer):
    """The submit response: the original's {success, job_id, message} and the job."""

    success = serializers.BooleanField(read_only=True)

    class Meta(JobSerializer.Meta):
        fields = SUBMISSION_FIELDS
        read_only_fields = fields

    def to_representation(self, job: VideoGenerationJob) -> dict:
        return job_representation(job, self.Meta.fields, request=self.context.get("request"), submitted=True)


class VideoInfo(JobSerializer):
    """One completed video: the original's {job_id, user_id, filename, file_size, created_at, status} and ours."""

    filename = serializers.CharField(source="video_filename")
    file_size = serializers.IntegerField(source="file_size_bytes")

    class Meta(JobSerializer.Meta):
        fields = VIDEO_FIELDS
        read_only_fields = fields
