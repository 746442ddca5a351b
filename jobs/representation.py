"""
A job as clients see it: job_representation(), the one function that
writes a job out, for the API's answers, the webhooks' data and the event
stream. The serializers in jobs/api/serializers.py only describe its schema
(their Meta.fields are the lists here); tests/jobs/test_representation.py
checks that what this writes is what the served schema says.
"""

import datetime
import re
from collections.abc import Sequence

from django.conf import settings
from django.urls import reverse
from rest_framework import serializers

from jobs.scheduling.estimates import estimated_completion_at, queue_standing
from jobs.models import Priority, Status, VideoGenerationJob

# The original FastAPI service's {job_id, status, message, result}, then ours.
JOB_FIELDS = [
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
    "mode",
    "image_url",
    "last_image_url",
    "image_fit",
    "extend_job_id",
    "start_deadline_at",
    "priority",
]
# GET /job, the webhooks' data and the event stream: the job and where it stands (jobs/scheduling/estimates.py).
JOB_STATUS_FIELDS = [*JOB_FIELDS, "queue_position", "estimated_start_at", "estimated_completion_at", "live_preview_url"]
# The submit's answer: the original's {success, job_id, message} and the job.
SUBMISSION_FIELDS = ["success", *JOB_FIELDS]
# One completed video: the original's {job_id, user_id, filename, file_size, created_at, status} and ours.
VIDEO_FIELDS = [
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

STATUS_MESSAGES = {
    Status.PENDING: "Job is pending",
    Status.RUNNING: "Job is running",
    Status.COMPLETED: "Job completed successfully",
    Status.CANCELLED: "Job was cancelled",
}
SUBMITTED_MESSAGE = "Generation job submitted successfully"

# A Hugging Face repo id ("THUDM/CogVideoX-2b"); anything else in a run's
# `source` is a path on a worker or the dotted path of a builder function.
HUB_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+")

_DATETIME = serializers.DateTimeField()


def render_datetime(value: datetime.datetime | None) -> str | None:
    """A datetime as the API writes every one: DRF's DateTimeField, ISO 8601 with UTC as Z."""
    return None if value is None else _DATETIME.to_representation(value)


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


def job_representation(
    job: VideoGenerationJob, fields: Sequence[str] = JOB_FIELDS, *, request=None, submitted: bool = False
) -> dict:
    """
    The job's `fields`, in that order (one of the lists above). Links are
    absolute on the request's host (anything with build_absolute_uri), or
    without one (a webhook's payload) on VIDEOGEN_PUBLIC_URL. `submitted`:
    the submit's answer, whose message for a pending job says so. Where the
    job stands in the queue is looked up only when `fields` asks for it.
    """

    def absolute(route: str) -> str:
        path = reverse(route, kwargs={"job_id": job.id})
        return request.build_absolute_uri(path) if request is not None else settings.VIDEOGEN_PUBLIC_URL + path

    def completed_file(route: str, stored) -> str | None:
        return absolute(route) if job.status == Status.COMPLETED and stored else None

    if job.status == Status.FAILED:
        message = f"Job failed: {job.error_message}"
    elif submitted and job.status == Status.PENDING:
        message = SUBMITTED_MESSAGE
    else:
        message = STATUS_MESSAGES[job.status]
    video_url = completed_file("download", job.video)
    values = {
        "success": True,
        "job_id": str(job.id),
        "status": job.status,
        "message": message,
        # The original's result: the video's location once completed.
        "result": video_url,
        "user_id": job.user_id,
        "progress": job.progress,
        "current_step": job.current_step,
        "error_message": job.error_message,
        # "" until the job fails; a class from ErrorCode after.
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
        "submitted_at": render_datetime(job.submitted_at),
        "created_at": render_datetime(job.submitted_at),
        "started_at": render_datetime(job.started_at),
        "completed_at": render_datetime(job.completed_at),
        "video_url": video_url,
        "poster_url": completed_file("poster", job.poster),
        "preview_url": completed_file("preview", job.preview),
        "file_size_bytes": job.file_size_bytes,
        "video_duration_seconds": job.video_duration_seconds,
        "run_info": public_run_info(job.run_info) if isinstance(job.run_info, dict) else job.run_info,
        "webhook_url": job.webhook_url or None,
        "webhook_events": [str(event) for event in job.webhook_events],
        "expires_at": render_datetime(job.expires_at),
        "expired_at": render_datetime(job.expired_at),
        "mode": job.mode,
        "image_url": absolute("image") if job.image else None,
        "last_image_url": absolute("last_image") if job.last_image else None,
        "image_fit": job.image_fit,
        "extend_job_id": None if job.extend_job_id is None else str(job.extend_job_id),
        "start_deadline_at": render_datetime(job.start_deadline_at),
        "priority": Priority(job.priority).label,
        "filename": job.video_filename,
        "file_size": job.file_size_bytes,
    }
    if "queue_position" in fields or "estimated_start_at" in fields:
        position, start = queue_standing(job)
        values["queue_position"] = position
        values["estimated_start_at"] = render_datetime(start)
    if "estimated_completion_at" in fields:
        values["estimated_completion_at"] = render_datetime(estimated_completion_at(job))
    if "live_preview_url" in fields:
        values["live_preview_url"] = _live_preview_url(job, absolute)
    return {name: values[name] for name in fields}


def _live_preview_url(job: VideoGenerationJob, absolute) -> str | None:
    # The worker stores the first preview at step VIDEOGEN_PREVIEW_EVERY, before that step's progress write.
    every = settings.VIDEOGEN_PREVIEW_EVERY
    if job.status != Status.RUNNING or not every or job.current_step < every:
        return None
    return absolute("live-preview")
