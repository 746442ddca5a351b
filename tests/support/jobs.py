"""Jobs as the tests make them: sizes, times, frames, a failed run's fields."""

from datetime import datetime, timedelta

import numpy as np
from django.utils import timezone

from jobs.models import ErrorCode, Status

# Small enough that a real tiny-random generation takes well under a second.
FAST_JOB = {"width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 2, "fps": 8}


def ago(seconds: float) -> datetime:
    return timezone.now() - timedelta(seconds=seconds)


def gradient_frames(count: int, height: int, width: int) -> np.ndarray:
    """Frames that differ from each other, so a decoder cannot collapse them."""
    frames = np.zeros((count, height, width, 3), dtype=np.uint8)
    for index in range(count):
        frames[index, :, :, 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
        frames[index, :, :, 1] = (index * 255) // max(count - 1, 1)
        frames[index, :, :, 2] = np.linspace(255, 0, height, dtype=np.uint8)[:, None]
    return frames


def a_failed_run(**fields) -> dict:
    """A job's fields after a run that got somewhere and failed."""
    ran = timezone.now() - timedelta(minutes=5)
    return {
        "status": Status.FAILED, "progress": 40, "current_step": 7, "worker": "gpu-1:4242 slot 0 cuda:0",
        "heartbeat_at": ran, "started_at": ran, "first_step_at": ran, "stepped_at": ran, "completed_at": ran,
        "error_code": ErrorCode.TIMEOUT, "error_message": "Generation timed out", "run_info": {"model": "tiny-random"},
        **fields,
    }
