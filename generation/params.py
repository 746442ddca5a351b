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
    # None: the job draws one when it is created (jobs/services.py).
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


def param_errors(spec: "ModelSpec", params: GenerationParams) -> dict[str, list[str]]:
    """
    The bounds check, the API's (a 400 with these messages) and the engine's
    (InvalidParams) alike: each parameter outside what this model takes,
    with why. Empty when all are within.
    """
    limits = bounds(spec)
    name = spec.name
    errors: dict[str, list[str]] = {}

    def outside(field: str, value) -> tuple[bool, bool]:
        return value < limits[field]["min"], value > limits[field]["max"]

    low, high = outside("num_frames", params.num_frames)
    if high:
        errors["num_frames"] = [f"Model {name} makes at most {limits['num_frames']['max']} frames."]
    elif low:
        errors["num_frames"] = [f"Model {name} makes {limits['num_frames']['min']}-{limits['num_frames']['max']} frames."]
    low, high = outside("num_inference_steps", params.num_inference_steps)
    if high:
        errors["num_inference_steps"] = [f"Model {name} takes at most {limits['num_inference_steps']['max']} steps."]
    elif low:
        steps = limits["num_inference_steps"]
        errors["num_inference_steps"] = [f"Model {name} takes {steps['min']}-{steps['max']} steps."]
    low, high = outside("guidance_scale", params.guidance_scale)
    if high:
        errors["guidance_scale"] = [
            f"Model {name} takes a guidance_scale of at most {limits['guidance_scale']['max']}."
        ]
    elif low:
        errors["guidance_scale"] = [f"Model {name} takes a guidance_scale of at least {limits['guidance_scale']['min']}."]
    for field in ("width", "height"):
        value, limit = getattr(params, field), limits[field]
        if not limit["min"] <= value <= limit["max"]:
            errors[field] = [f"Model {name} needs a {field} between {limit['min']} and {limit['max']} pixels."]
        elif value % limit["multiple_of"]:
            errors[field] = [f"Model {name} needs a {field} that is a multiple of {limit['multiple_of']}."]
    if not limits["fps"]["min"] <= params.fps <= limits["fps"]["max"]:
        errors["fps"] = [f"fps must be {limits['fps']['min']}-{limits['fps']['max']}."]
    if params.seed is not None and not SEED_RANGE[0] <= params.seed <= SEED_RANGE[1]:
        errors["seed"] = [f"seed must be {SEED_RANGE[0]}-{SEED_RANGE[1]}."]
    return errors
