"""
The generation parameters and their bounds: one definition that flows from
the API's request (jobs/api/serializers.py) through job_create and the job's
columns to the engine. Plain Python, like the rest of the engine. A model's
own defaults and bounds, and the check of a request against them, are its
spec's (generation/registry.py's ModelSpec), which builds on these.
"""

import dataclasses
from dataclasses import dataclass

# The original API's bounds, for every model; a model's own (ModelSpec) are
# at most these, and may be tighter.
FPS_RANGE = (1, 60)
FRAMES_RANGE = (1, 200)
STEPS_RANGE = (1, 200)
GUIDANCE_RANGE = (0.1, 20.0)
SEED_RANGE = (0, 2**63 - 1)

# What a generation starts from: text alone, a first frame, or a
# first and a last frame. A model lists the ones it can do (ModelSpec.modes);
# "extend" is the API's, and needs image-to-video of the engine.
TEXT_TO_VIDEO = "text-to-video"
IMAGE_TO_VIDEO = "image-to-video"
FIRST_LAST_FRAME = "first-last-frame"
GENERATION_MODES = (TEXT_TO_VIDEO, IMAGE_TO_VIDEO, FIRST_LAST_FRAME)


def mode_for(has_image: bool, has_last_image: bool) -> str:
    """The mode of a generation given which frames it is given; a last frame alone is no mode (ValueError)."""
    if has_last_image and not has_image:
        raise ValueError("a last image needs a first image")
    if has_last_image:
        return FIRST_LAST_FRAME
    return IMAGE_TO_VIDEO if has_image else TEXT_TO_VIDEO


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
    # None: the job draws one when it is created (jobs/services/lifecycle.py).
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


# Per ranged parameter, what a value above and below its bounds is told; the
# API's fields refuse values outside the original API's ranges first, in DRF's words.
RANGE_MESSAGES = (
    ("num_frames", "makes at most {max} frames", "makes {min}-{max} frames"),
    ("num_inference_steps", "takes at most {max} steps", "takes {min}-{max} steps"),
    ("guidance_scale", "takes a guidance_scale of at most {max}", "takes a guidance_scale of at least {min}"),
    ("fps", "plays at most {max} frames a second", "plays {min}-{max} frames a second"),
)
