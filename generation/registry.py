"""
The model catalogue: each model videogen knows how to run, as plain data
(pipeline class, dtype, memory options, frame rule, measured memory).

Pure Python: no Django settings, no environment, no torch or diffusers. The
API validates requests against it in web processes that never load a model,
and the engine and its tests use it without django.setup(). Which of these
models a deployment serves, on which queue and for how long, is policy:
jobs/scheduling/deployment.py, which also applies the operator's models file and
weights locations through catalogue().
"""

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from generation.params import (
    FIRST_LAST_FRAME,
    FPS_RANGE,
    FRAMES_RANGE,
    GENERATION_MODES,
    GUIDANCE_RANGE,
    IMAGE_TO_VIDEO,
    MODEL_DEFAULTED,
    RANGE_MESSAGES,
    SEED_RANGE,
    STEPS_RANGE,
    TEXT_TO_VIDEO,
    GenerationParams,
)

CACHE_METHODS = ("first_block_cache", "taylorseer_cache")


@dataclass(frozen=True)
class MemoryProfile:
    """
    Peak GPU memory of one job in GiB, fitted to measurements (bench/gpu.py
    on an H200 with the full architectures, bench/RESULTS.md): the weights
    on the GPU, plus the larger of the denoiser's activations (which grow
    with frames x height x width) and the VAE decode (untiled it grows with
    height x width, as both VAEs decode a few frames at a time; tiled it is
    about constant), plus TaylorSeer's stored factors, which stay until the
    decode is done. With CPU offload only one component is on the GPU at a
    time: the text encoder is the largest.
    """

    resident: float
    offload_floor: float
    denoise_per_mvoxel: float
    decode_tiled: float
    decode_untiled_per_mpixel: float
    taylorseer_per_mvoxel: float

    def peak_gib(
        self, frames: int, width: int, height: int, *, tiled: bool, offload: bool, taylorseer: bool = False
    ) -> float:
        mvoxels = frames * width * height / 1e6
        denoise = self.denoise_per_mvoxel * mvoxels
        decode = self.decode_tiled if tiled else self.decode_untiled_per_mpixel * width * height / 1e6
        cache = self.taylorseer_per_mvoxel * mvoxels if taylorseer else 0.0
        if offload:
            return max(self.offload_floor, cache + max(denoise, decode) + 0.5)
        return self.resident + cache + max(denoise, decode)


@dataclass(frozen=True)
class MemoryPlan:
    """How a job runs within a GPU's memory: the fastest options that fit, or the leanest when none does."""

    vae_tiling: bool
    cpu_offload: bool
    peak_gib: float
    fits: bool


# Left free on the card: the CUDA context, cuBLAS workspaces, the allocator's
# fragmentation. The estimate itself gets 5% on top.
GPU_MEMORY_RESERVE_GIB = 1.0
ESTIMATE_MARGIN = 1.05


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    # diffusers pipeline class name, looked up on the diffusers module.
    pipeline_class: str
    # Hugging Face repo id or local directory for from_pretrained; None for a
    # model built in code by `builder` (the tiny ones).
    source: str | None
    builder: str | None = None
    revision: str | None = None
    # dtype on CUDA ("bfloat16", "float16", "float32"); the CPU runs float32.
    cuda_dtype: str = "bfloat16"
    # Load the VAE in float32 whatever the pipeline's dtype (Wan decodes badly in bf16).
    vae_float32: bool = False
    # Likewise the CLIP image encoder (Wan 2.1 I2V's, as its model card loads it).
    image_encoder_float32: bool = False
    # What the model can start from (generation/params.py's GENERATION_MODES).
    modes: tuple[str, ...] = (TEXT_TO_VIDEO,)
    # A second diffusers class for the image modes, made from the loaded
    # pipeline with from_pipe (the same modules, loaded once); None where
    # pipeline_class serves every mode.
    image_pipeline_class: str | None = None
    max_sequence_length: int = 226

    # Defaults and bounds of what a request may ask for.
    width: int = 720
    height: int = 480
    min_size: int = 256
    max_width: int = 720
    max_height: int = 480
    # Narrower minimums than min_size, for models of one size only.
    min_width: int | None = None
    min_height: int | None = None
    # Width and height must be multiples of this (VAE downscale x patch size).
    size_multiple: int = 16
    num_frames: int = 36
    max_frames: int = 49
    # The VAE compresses time by this factor and wants frames of the form
    # k * temporal_compression + 1; other counts are generated up and trimmed.
    temporal_compression: int = 4
    # Generate exactly this many frames whatever is asked (then trim): for
    # models whose position embeddings were learned for one length.
    fixed_num_frames: int | None = None
    num_inference_steps: int = 50
    max_steps: int = 200
    guidance_scale: float = 4.5
    max_guidance_scale: float = 20.0
    fps: int = 24

    # Seconds a job of this model may run (load included) before it fails as
    # timed out; None: the deployment's VIDEOGEN_JOB_TIMEOUT, which also caps
    # it (jobs/scheduling/deployment.py).
    timeout: int | None = None

    # Memory and speed options, all off unless the spec or the operator asks.
    enable_model_cpu_offload: bool = False
    enable_vae_slicing: bool = False
    enable_vae_tiling: bool = False
    compile_transformer: bool = False
    # One of CACHE_METHODS: diffusers' caching hooks on the denoiser, trading
    # a little quality for speed.
    cache: str | None = None
    cache_threshold: float = 0.05
    # Measured peak memory on CUDA in the spec's dtype; None where unmeasured
    # (then nothing is admitted or refused for memory).
    memory: MemoryProfile | None = None

    def memory_plan(self, num_frames: int, width: int, height: int, gpu_memory_gib: float) -> MemoryPlan | None:
        """
        The fastest way to run this job on a GPU of gpu_memory_gib: the VAE
        untiled (1-2.5 s faster per job, measured) unless that does not fit,
        then tiled, then CPU offload (about 8 s slower per job). A spec that
        forces tiling or offload keeps it. None when the spec has no
        measurements.
        """
        if self.memory is None:
            return None
        frames = self.valid_frame_count(num_frames)
        usable = gpu_memory_gib - GPU_MEMORY_RESERVE_GIB
        taylorseer = self.cache == "taylorseer_cache"
        candidates = [
            (tiled, offload)
            for offload in (False, True)
            for tiled in (False, True)
            if (tiled or not self.enable_vae_tiling) and (offload or not self.enable_model_cpu_offload)
        ]
        plans = [
            MemoryPlan(
                vae_tiling=tiled,
                cpu_offload=offload,
                peak_gib=round(
                    self.memory.peak_gib(frames, width, height, tiled=tiled, offload=offload, taylorseer=taylorseer)
                    * ESTIMATE_MARGIN,
                    1,
                ),
                fits=False,
            )
            for tiled, offload in candidates
        ]
        for plan in plans:
            if plan.peak_gib <= usable:
                return dataclasses.replace(plan, fits=True)
        return min(plans, key=lambda plan: plan.peak_gib)

    def too_large(self, num_frames: int, width: int, height: int, plan: MemoryPlan) -> str:
        """What a job whose plan does not fit would need: for the client's 400 and the job's error alike."""
        return (
            f"{num_frames} frames at {width}x{height} with model {self.name} need about {plan.peak_gib:.1f} GiB "
            "of GPU memory even with VAE tiling and CPU offload"
        )

    def valid_frame_count(self, num_frames: int) -> int:
        """The smallest count the model accepts that is at least num_frames."""
        if self.fixed_num_frames is not None:
            return max(self.fixed_num_frames, num_frames)
        step = self.temporal_compression
        if step <= 1:
            return num_frames
        return ((num_frames - 1 + step - 1) // step) * step + 1

    def defaults(self) -> dict:
        """What a request gets for each parameter it leaves out."""
        return {name: getattr(self, name) for name in MODEL_DEFAULTED}

    def bounds(self) -> dict[str, dict]:
        """What a request may ask of this model: the API's ranges narrowed by the spec's. Shown at GET /models."""
        return {
            "width": {"min": self.min_width or self.min_size, "max": self.max_width, "multiple_of": self.size_multiple},
            "height": {
                "min": self.min_height or self.min_size, "max": self.max_height, "multiple_of": self.size_multiple
            },
            "num_frames": {"min": FRAMES_RANGE[0], "max": min(self.max_frames, FRAMES_RANGE[1])},
            "num_inference_steps": {"min": STEPS_RANGE[0], "max": min(self.max_steps, STEPS_RANGE[1])},
            "guidance_scale": {"min": GUIDANCE_RANGE[0], "max": min(self.max_guidance_scale, GUIDANCE_RANGE[1])},
            "fps": {"min": FPS_RANGE[0], "max": FPS_RANGE[1]},
        }

    def param_errors(self, params: GenerationParams) -> dict[str, list[str]]:
        """
        The bounds check, the API's (a 400 with these messages) and the
        engine's (InvalidParams) alike: each parameter outside what this
        model takes, with why. Empty when all are within.
        """
        limits = self.bounds()
        errors: dict[str, list[str]] = {}
        for field, too_high, too_low in RANGE_MESSAGES:
            value, limit = getattr(params, field), limits[field]
            if not limit["min"] <= value <= limit["max"]:
                message = too_high if value > limit["max"] else too_low
                errors[field] = [f"Model {self.name} {message.format(**limit)}."]
        for field in ("width", "height"):
            value, limit = getattr(params, field), limits[field]
            if limit["min"] == limit["max"] != value:
                errors[field] = [f"Model {self.name} needs a {field} of {limit['min']} pixels."]
            elif not limit["min"] <= value <= limit["max"]:
                errors[field] = [
                    f"Model {self.name} needs a {field} between {limit['min']} and {limit['max']} pixels."
                ]
            elif value % limit["multiple_of"]:
                errors[field] = [f"Model {self.name} needs a {field} that is a multiple of {limit['multiple_of']}."]
        if params.seed is not None and not SEED_RANGE[0] <= params.seed <= SEED_RANGE[1]:
            errors["seed"] = [f"seed must be {SEED_RANGE[0]}-{SEED_RANGE[1]}."]
        return errors

    def public(self) -> dict:
        """What clients may know: defaults and bounds, not where the weights live."""
        return {
            "name": self.name,
            "description": self.description,
            "pipeline": self.pipeline_class,
            "defaults": self.defaults(),
            "bounds": self.bounds(),
            "modes": list(self.modes),
        }

    def size_for_aspect(self, image_width: int, image_height: int) -> tuple[int, int]:
        """
        (width, height) for a job given an image and no size: the image's
        aspect ratio at the model's default area, in multiples of
        size_multiple and within the model's bounds, as close to the
        image's aspect as those allow.
        """
        limits = self.bounds()
        multiple = self.size_multiple
        low = {side: math.ceil(limits[side]["min"] / multiple) * multiple for side in ("width", "height")}
        high = {side: max(low[side], limits[side]["max"] // multiple * multiple) for side in ("width", "height")}
        aspect = image_width / image_height
        area = self.width * self.height
        width, height = math.sqrt(area * aspect), math.sqrt(area / aspect)
        # Shrink to fit the maximums, then grow to reach the minimums where
        # that breaks no maximum; what is still out is clamped alone.
        shrink = min(1.0, high["width"] / width, high["height"] / height)
        width, height = width * shrink, height * shrink
        grow = max(1.0, low["width"] / width, low["height"] / height)
        grow = min(grow, high["width"] / width, high["height"] / height)
        width, height = width * max(grow, 1.0), height * max(grow, 1.0)

        def snap(value: float, side: str) -> int:
            return min(high[side], max(low[side], round(value / multiple) * multiple))

        return snap(width, "width"), snap(height, "height")


# Measured with bench/gpu.py on an H200 (bench/RESULTS.md, "GPU"), fp16.
COGVIDEOX_2B_MEMORY = MemoryProfile(
    resident=14.2, offload_floor=10.6, denoise_per_mvoxel=0.09, decode_tiled=3.8, decode_untiled_per_mpixel=42.7,
    taylorseer_per_mvoxel=0.91,
)
# bf16 with the VAE in float32.
WAN_1_3B_MEMORY = MemoryProfile(
    resident=13.7, offload_floor=10.7, denoise_per_mvoxel=0.047, decode_tiled=1.9, decode_untiled_per_mpixel=21.9,
    taylorseer_per_mvoxel=1.05,
)

# Default options, chosen from the H200 measurements (bench/RESULTS.md, "GPU"):
# - VAE tiling and CPU offload are chosen per job by memory_plan: the VAE
#   untiled when the job fits (CogVideoX-2b at 720x480x49: 29 GiB peak, 1.0 s
#   faster than tiled; Wan 1.3B at 832x480x81: 22.5 GiB, 2.4 s faster), tiled
#   on smaller cards (18 and 15.6 GiB), CPU offload only where even that does
#   not fit. So a 24 GB card tiles, 48 and 80 GB don't.
# - torch.compile (regional) is opt-in: faster warm and lossless, but every
#   new size recompiles on its first job and it needs a working compiler
#   toolchain in the worker's image.
# - TaylorSeer is opt-in: much faster whole jobs, but it computes only some
#   of the steps and extrapolates the rest, a visible quality cost, and it
#   holds far more memory (80 GB cards). Figures: bench/RESULTS.md, GPU.
# - First-block cache: its skips depend on the weights; not measurable with
#   random twins, so off.
COGVIDEOX_2B = ModelSpec(
    name="cogvideox-2b", pipeline_class="CogVideoXPipeline", source="THUDM/CogVideoX-2b",
    description="CogVideoX-2b (THUDM): 720x480, up to 49 frames. About 18 GB of GPU memory in fp16.",
    # Trained in fp16. The original service's defaults are kept for its clients.
    cuda_dtype="float16",
    memory=COGVIDEOX_2B_MEMORY,
)
COGVIDEOX_5B = ModelSpec(
    name="cogvideox-5b", pipeline_class="CogVideoXPipeline", source="THUDM/CogVideoX-5b",
    description="CogVideoX-5b (THUDM): 720x480, up to 49 frames at 8 fps. About 26 GB of GPU memory in bf16.",
    cuda_dtype="bfloat16",
    num_frames=49,
    guidance_scale=6.0,
    fps=8,
    enable_vae_tiling=True,
)
# Wan 2.1 at 480p, as its model cards run it: bf16 with the VAE in float32.
WAN_480P = dict(
    cuda_dtype="bfloat16", vae_float32=True, max_sequence_length=512, width=832, height=480, min_size=256,
    max_width=832, max_height=832, num_frames=81, max_frames=81, guidance_scale=5.0, fps=16,
)
WAN_2_1_T2V_1_3B = ModelSpec(
    name="wan2.1-t2v-1.3b", pipeline_class="WanPipeline", source="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
    description="Wan 2.1 text-to-video 1.3B (Wan-AI): 832x480, up to 81 frames at 16 fps. About 8 GB of GPU memory.",
    memory=WAN_1_3B_MEMORY,
    **WAN_480P,
)

# Image to video. Defaults are the model cards' and diffusers' documented
# examples; no memory profile yet (unmeasured), so nothing is admitted or
# refused for memory.
WAN_2_1_I2V_14B_480P = ModelSpec(
    name="wan2.1-i2v-14b-480p", pipeline_class="WanImageToVideoPipeline", source="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
    description="Wan 2.1 image-to-video 14B at 480p (Wan-AI): 832x480, up to 81 frames at 16 fps.",
    image_encoder_float32=True,
    modes=(IMAGE_TO_VIDEO,),
    **WAN_480P,
)
# FLF2V's transformer adds a learned position embedding for two frames' CLIP
# tokens: given one image, diffusers cannot run it (the embedding is for
# both), so it does first-last-frame only.
WAN_2_1_FLF2V_14B_720P = dataclasses.replace(
    WAN_2_1_I2V_14B_480P,
    name="wan2.1-flf2v-14b-720p",
    description=(
        "Wan 2.1 first-last-frame-to-video 14B at 720p (Wan-AI): a video from its first and last frames, "
        "1280x720, up to 81 frames at 16 fps."
    ),
    source="Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers",
    width=1280, height=720, max_width=1280, max_height=1280,
    guidance_scale=5.5,
    modes=(FIRST_LAST_FRAME,),
)
# Wan 2.2's VAE compresses 16x and the transformer patches 2x2: sizes are
# multiples of 32. 24 fps, 121 frames (5 s) at 1280x704.
WAN_2_2_TI2V_5B = ModelSpec(
    name="wan2.2-ti2v-5b", pipeline_class="WanPipeline", source="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
    image_pipeline_class="WanImageToVideoPipeline",
    description="Wan 2.2 TI2V 5B (Wan-AI): text or image to video in one model, 1280x704, up to 121 frames at 24 fps.",
    modes=(TEXT_TO_VIDEO, IMAGE_TO_VIDEO),
    **dict(
        WAN_480P, width=1280, height=704, max_width=1280, max_height=1280, size_multiple=32, num_frames=121,
        max_frames=121, fps=24,
    ),
)
# CogVideoX-5b-I2V learned its position embeddings for 720x480 and 49
# frames: diffusers refuses any other size, and other lengths run on
# embeddings it was not trained with. So one size, and 49 frames always
# generated (fewer are trimmed).
COGVIDEOX_5B_I2V = dataclasses.replace(
    COGVIDEOX_5B,
    name="cogvideox-5b-i2v", pipeline_class="CogVideoXImageToVideoPipeline", source="THUDM/CogVideoX-5b-I2V",
    description="CogVideoX-5b-I2V (THUDM): image to video at 720x480 only, up to 49 frames at 8 fps.",
    min_width=720,
    min_height=480,
    fixed_num_frames=49,
    modes=(IMAGE_TO_VIDEO,),
)

RANDOM_TWIN = (
    " with random weights, built on the GPU: the real model's speed and memory without its weights, for "
    "benchmarks. GPU only; its frames are noise."
)


def random_twin(spec: ModelSpec, builder: str, description: str) -> ModelSpec:
    """spec's full architecture with random weights, built in code (generation/tiny.py): spec's shape and options."""
    return dataclasses.replace(
        spec,
        name=f"{spec.name}-random",
        description=description,
        source=None,
        builder=builder,
        # Those are from_pretrained's; the builder casts as the real model is served.
        vae_float32=False,
        image_encoder_float32=False,
    )


# Tiny models are built in float32 and stay so on any device.
TINY_BOUNDS = dict(
    width=240, height=160, min_size=32, max_width=512, max_height=512, max_frames=200, max_sequence_length=32,
    cuda_dtype="float32",
)


def tiny_twin(spec: ModelSpec, name: str, builder: str, description: str, **fields) -> ModelSpec:
    """A small model built in code that runs spec's code path: its pipelines, modes and guidance, TINY_BOUNDS' sizes."""
    return ModelSpec(
        name=name,
        description=description,
        pipeline_class=spec.pipeline_class,
        image_pipeline_class=spec.image_pipeline_class,
        modes=spec.modes,
        guidance_scale=spec.guidance_scale,
        source=None,
        builder=builder,
        **{**TINY_BOUNDS, **fields},
    )


BUILTIN_SPECS = (
    tiny_twin(
        COGVIDEOX_2B,
        "tiny-random",
        "generation.tiny.build_tiny_cogvideox",
        "A real CogVideoXPipeline with small random weights, built offline in code. Runs the exact code "
        "path of CogVideoX-2b in seconds on a CPU; its frames are noise.",
    ),
    tiny_twin(
        WAN_2_1_T2V_1_3B,
        "tiny-random-wan",
        "generation.tiny.build_tiny_wan",
        "A real WanPipeline with small random weights, built offline in code: Wan 2.1's code path.",
    ),
    COGVIDEOX_2B,
    random_twin(
        COGVIDEOX_2B, "generation.tiny.build_random_cogvideox_2b", "CogVideoX-2b's full architecture" + RANDOM_TWIN
    ),
    COGVIDEOX_5B,
    WAN_2_1_T2V_1_3B,
    random_twin(
        WAN_2_1_T2V_1_3B,
        "generation.tiny.build_random_wan_1_3b",
        "Wan 2.1 T2V 1.3B's full architecture with random weights, built on the GPU, for benchmarks. "
        "GPU only; its frames are noise.",
    ),
    WAN_2_1_I2V_14B_480P,
    random_twin(
        WAN_2_1_I2V_14B_480P,
        "generation.tiny.build_random_wan_i2v_14b",
        "Wan 2.1 I2V 14B's full architecture" + RANDOM_TWIN,
    ),
    WAN_2_1_FLF2V_14B_720P,
    WAN_2_2_TI2V_5B,
    random_twin(
        WAN_2_2_TI2V_5B, "generation.tiny.build_random_wan_ti2v_5b", "Wan 2.2 TI2V 5B's full architecture" + RANDOM_TWIN
    ),
    COGVIDEOX_5B_I2V,
    random_twin(
        COGVIDEOX_5B_I2V,
        "generation.tiny.build_random_cogvideox_5b_i2v",
        "CogVideoX-5b-I2V's full architecture" + RANDOM_TWIN,
    ),
    tiny_twin(
        COGVIDEOX_5B_I2V,
        "tiny-random-i2v",
        "generation.tiny.build_tiny_cogvideox_i2v",
        "A real CogVideoXImageToVideoPipeline with small random weights, built offline in code: "
        "CogVideoX-5b-I2V's code path (any size: rotary embeddings only). Its frames are noise.",
    ),
    tiny_twin(
        WAN_2_1_I2V_14B_480P,
        "tiny-random-wan-i2v",
        "generation.tiny.build_tiny_wan_i2v",
        "A real WanImageToVideoPipeline with small random weights and a tiny CLIP image encoder, built "
        "offline in code: Wan 2.1 I2V's code path. Its frames are noise.",
    ),
    tiny_twin(
        WAN_2_1_FLF2V_14B_720P,
        "tiny-random-wan-flf2v",
        "generation.tiny.build_tiny_wan_flf2v",
        "A real WanImageToVideoPipeline shaped like Wan 2.1 FLF2V (both frames' CLIP tokens, each with its "
        "position embedding), small random weights, built offline in code. Its frames are noise.",
    ),
    tiny_twin(
        WAN_2_2_TI2V_5B,
        "tiny-random-wan-ti2v",
        "generation.tiny.build_tiny_wan_ti2v",
        "Wan 2.2 TI2V's code path with small random weights, built offline in code: WanPipeline for text, "
        "WanImageToVideoPipeline on the same modules for an image. Its frames are noise.",
        width=256,
        size_multiple=32,
    ),
)

BUILTIN_MODELS: Mapping[str, ModelSpec] = MappingProxyType({spec.name: spec for spec in BUILTIN_SPECS})


class UnknownModel(LookupError):
    pass


class CatalogueError(ValueError):
    """Overrides that do not describe valid specs."""


def catalogue(overrides: Mapping[str, Mapping] | None = None) -> dict[str, ModelSpec]:
    """
    The built-in specs with overrides applied: {"cogvideox-2b": {"source":
    "/models/CogVideoX-2b", "enable_model_cpu_offload": true}} changes fields
    of a built-in spec, a new name describes a new model ({"my-model":
    {...every field...}}), and a "memory" object becomes a MemoryProfile.
    """
    if not isinstance(overrides or {}, Mapping):
        raise CatalogueError("must be an object of model names to spec fields")
    specs = dict(BUILTIN_MODELS)
    fields = {field.name for field in dataclasses.fields(ModelSpec)}
    for name, values in (overrides or {}).items():
        if not isinstance(values, Mapping):
            raise CatalogueError(f"{name!r} must map to an object of spec fields")
        unknown = set(values) - fields
        if unknown:
            raise CatalogueError(f"unknown fields for {name!r}: {sorted(unknown)}")
        if isinstance(values.get("modes"), list):
            values = {**values, "modes": tuple(values["modes"])}
        if isinstance(values.get("memory"), Mapping):
            try:
                values = {**values, "memory": MemoryProfile(**values["memory"])}
            except TypeError as exc:
                raise CatalogueError(f"model {name!r} memory: {exc}")
        try:
            if name in specs:
                specs[name] = dataclasses.replace(specs[name], **values)
            else:
                specs[name] = ModelSpec(**{"name": name, **values})
        except TypeError as exc:
            raise CatalogueError(f"model {name!r}: {exc}")
    for name, spec in specs.items():
        if spec.cache not in (None, *CACHE_METHODS):
            raise CatalogueError(f"model {name!r}: cache must be one of {CACHE_METHODS}")
        if not isinstance(spec.modes, tuple) or not spec.modes or set(spec.modes) - set(GENERATION_MODES):
            raise CatalogueError(f"model {name!r}: modes must be a non-empty list of {list(GENERATION_MODES)}")
    return specs


def get_spec(name: str, specs: Mapping[str, ModelSpec] = BUILTIN_MODELS) -> ModelSpec:
    """One model of a catalogue (the built-in one unless given)."""
    if name not in specs:
        raise UnknownModel(f"unknown model {name!r}; known models: {', '.join(sorted(specs))}")
    return specs[name]
