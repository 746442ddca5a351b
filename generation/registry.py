"""
The models videogen knows how to run, as plain data.

This module imports neither torch nor diffusers: the API validates requests
against it in web processes that never load a model.
"""

import os
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    # diffusers pipeline class name, looked up on the diffusers module.
    pipeline_class: str
    # Hugging Face repo id or local directory for from_pretrained; None for a
    # model built in code (tiny-random). VIDEOGEN_MODEL_SOURCE_<NAME> overrides.
    source: str | None
    # Dotted path of a function that builds the pipeline in code, offline.
    builder: str | None = None
    # dtype on CUDA; the CPU always runs float32.
    cuda_dtype: str = "bfloat16"
    max_sequence_length: int = 226

    width: int = 720
    height: int = 480
    min_size: int = 256
    max_width: int = 720
    max_height: int = 480
    # Width and height must be multiples of this (VAE downscale x patch size).
    size_multiple: int = 16
    # The VAE compresses time by this factor and wants frames of the form
    # k * temporal_compression + 1; other counts are generated up and trimmed.
    temporal_compression: int = 4
    max_frames: int = 49
    max_steps: int = 200

    def valid_frame_count(self, num_frames: int) -> int:
        """The smallest count the model accepts that is at least num_frames."""
        step = self.temporal_compression
        if step <= 1:
            return num_frames
        return ((num_frames - 1 + step - 1) // step) * step + 1

    def source_for_loading(self) -> str | None:
        override = os.environ.get("VIDEOGEN_MODEL_SOURCE_" + self.name.upper().replace("-", "_").replace(".", "_"))
        return override or self.source


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="tiny-random",
            description=(
                "A real CogVideoXPipeline with small random weights, built offline in code. "
                "Runs the exact code path of CogVideoX-2b in seconds on a CPU; the frames are noise."
            ),
            pipeline_class="CogVideoXPipeline",
            source=None,
            builder="generation.tiny.build_tiny_cogvideox",
            cuda_dtype="float32",
            max_sequence_length=32,
            width=240,
            height=160,
            min_size=32,
            max_width=512,
            max_height=512,
            max_frames=200,
        ),
        ModelSpec(
            name="cogvideox-2b",
            description="CogVideoX-2b (THUDM), 720x480, up to 49 frames. Needs about 18 GB of GPU memory in fp16.",
            pipeline_class="CogVideoXPipeline",
            source="THUDM/CogVideoX-2b",
            # CogVideoX-2b was trained in fp16; bf16 is recommended for 5b.
            cuda_dtype="float16",
        ),
    )
}


def served_models() -> dict[str, ModelSpec]:
    """The specs this deployment serves (VIDEOGEN_MODELS), in that order."""
    served = {}
    for name in settings.VIDEOGEN_MODELS:
        if name not in REGISTRY:
            known = ", ".join(sorted(REGISTRY))
            raise ImproperlyConfigured(f"VIDEOGEN_MODELS names {name!r}; known models: {known}")
        served[name] = REGISTRY[name]
    if settings.VIDEOGEN_DEFAULT_MODEL not in served:
        raise ImproperlyConfigured(
            f"VIDEOGEN_DEFAULT_MODEL {settings.VIDEOGEN_DEFAULT_MODEL!r} is not in VIDEOGEN_MODELS"
        )
    return served


def get_spec(name: str) -> ModelSpec:
    return REGISTRY[name]
