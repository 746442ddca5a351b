"""
The generation parameters and their bounds: one definition that flows from
the API's request (jobs/serializers.py) through job_create and the job's
columns to the engine. Plain Python, like the rest of the engine.
"""

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from generation.registry import ModelSpec

# The original API's bounds, for every model; a model's own (ModelSpec) are
# at most these, and may be tighter.
FPS_RANGE = (1, 60)
FRAMES_RANGE = (1, 200)
STEPS_RANGE = (1, 200)
GUIDANCE_RANGE = (0.1, 20.0)
SEED_RANGE = (0, 2**63 - 1)


@dataclass(frozen=True)
class GenerationParams:
    """
    What a video is made from. The job's columns have these names
    (jobs.models.VideoGenerationJob), so a job's parameters are
    GenerationParams.of(job); the API calls model_name `model`.
    """

    prompt: str
    negative_prompt: str
    width: int
    height: int
    num_frames: int
    num_inference_steps: int
    guidance_scale: float
    # None: the job draws one when it is created (jobs/lifecycle.py).
    seed: int | None
    # Last and with defaults, so the engine's callers that hold a spec and
    # keep the frames (tests, bench/) may leave them out.
    model_name: str = ""
    fps: int = 24

    @classmethod
    def of(cls, source) -> "GenerationParams":
        """The parameters of anything that has them as attributes: a job."""
        return cls(**{name: getattr(source, name) for name in PARAM_NAMES})

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


PARAM_NAMES = tuple(field.name for field in dataclasses.fields(GenerationParams))


# The parameters a request may leave out, for the model's own default (ModelSpec's attribute of the same name).
MODEL_DEFAULTED = ("width", "height", "num_frames", "num_inference_steps", "guidance_scale", "fps")


def defaults(spec: "ModelSpec") -> dict:
    return {name: getattr(spec, name) for name in MODEL_DEFAULTED}


def bounds(spec: "ModelSpec") -> dict[str, dict]:
    """What a request may ask of a model: the API's ranges narrowed by the spec's. Shown at GET /models."""
    return {
        "width": {"min": spec.min_size, "max": spec.max_width, "multiple_of": spec.size_multiple},
        "height": {"min": spec.min_size, "max": spec.max_height, "multiple_of": spec.size_multiple},
        "num_frames": {"min": FRAMES_RANGE[0], "max": min(spec.max_frames, FRAMES_RANGE[1])},
        "num_inference_steps": {"min": STEPS_RANGE[0], "max": min(spec.max_steps, STEPS_RANGE[1])},
        "guidance_scale": {"min": GUIDANCE_RANGE[0], "max": min(spec.max_guidance_scale, GUIDANCE_RANGE[1])},
        "fps": {"min": FPS_RANGE[0], "max": FPS_RANGE[1]},
    }


# Per ranged parameter, what a value above and below its bounds is told; the
# API's fields refuse values outside the original API's ranges first, in DRF's words.
RANGE_MESSAGES = (
    ("num_frames", "makes at most {max} frames", "makes {min}-{max} frames"),
    ("num_inference_steps", "takes at most {max} steps", "takes {min}-{max} steps"),
    ("guidance_scale", "takes a guidance_scale of at most {max}", "takes a guidance_scale of at least {min}"),
    ("fps", "plays at most {max} frames a second", "plays {min}-{max} frames a second"),
)


def param_errors(spec: "ModelSpec", params: GenerationParams) -> dict[str, list[str]]:
    """
    The bounds check, the API's (a 400 with these messages) and the engine's
    (InvalidParams) alike: each parameter outside what this model takes,
    with why. Empty when all are within.
    """
    limits = bounds(spec)
    errors: dict[str, list[str]] = {}
    for field, too_high, too_low in RANGE_MESSAGES:
        value, limit = getattr(params, field), limits[field]
        if not limit["min"] <= value <= limit["max"]:
            message = too_high if value > limit["max"] else too_low
            errors[field] = [f"Model {spec.name} {message.format(**limit)}."]
    for field in ("width", "height"):
        value, limit = getattr(params, field), limits[field]
        if not limit["min"] <= value <= limit["max"]:
            errors[field] = [f"Model {spec.name} needs a {field} between {limit['min']} and {limit['max']} pixels."]
        elif value % limit["multiple_of"]:
            errors[field] = [f"Model {spec.name} needs a {field} that is a multiple of {limit['multiple_of']}."]
    if params.seed is not None and not SEED_RANGE[0] <= params.seed <= SEED_RANGE[1]:
        errors["seed"] = [f"seed must be {SEED_RANGE[0]}-{SEED_RANGE[1]}."]
    return errors
