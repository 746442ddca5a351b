"""
The model catalogue: each model videogen knows how to run, as plain data
(pipeline class, dtype, memory options, frame rule, measured memory).

Pure Python: no Django settings, no environment, no torch or diffusers. The
API validates requests against it in web processes that never load a model,
and the engine and its tests use it without django.setup(). Which of these
models a deployment serves, on which queue and for how long, is policy:
jobs/deployment.py, which also applies the operator's models file and
weights locations through catalogue().
"""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from generation.params import bounds, defaults

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
    max_sequence_length: int = 226

    # Defaults and bounds of what a request may ask for.
    width: int = 720
    height: int = 480
    min_size: int = 256
    max_width: int = 720
    max_height: int = 480
    # Width and height must be multiples of this (VAE downscale x patch size).
    size_multiple: int = 16
    num_frames: int = 36
    max_frames: int = 49
    # The VAE compresses time by this factor and wants frames of the form
    # k * temporal_compression + 1; other counts are generated up and trimmed.
    temporal_compression: int = 4
    num_inference_steps: int = 50
    max_steps: int = 200
    guidance_scale: float = 4.5
    max_guidance_scale: float = 20.0
    fps: int = 24

    # Seconds a job of this model may run (load included) before it fails as
    # timed out; None: the deployment's VIDEOGEN_JOB_TIMEOUT, which also caps
    # it (jobs/deployment.py).
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
        step = self.temporal_compression
        if step <= 1:
            return num_frames
        return ((num_frames - 1 + step - 1) // step) * step + 1

    def public(self) -> dict:
        """What clients may know: defaults and bounds, not where the weights live."""
        return {
            "name": self.name,
            "description": self.description,
            "pipeline": self.pipeline_class,
            "defaults": defaults(self),
            "bounds": bounds(self),
        }


TINY_BOUNDS = dict(
    width=240, height=160, min_size=32, max_width=512, max_height=512, max_frames=200, max_sequence_length=32,
    # Tiny models are built in float32 and stay so on any device.
    cuda_dtype="float32",
)

# Measured with bench/gpu.py on an H200 (bench/RESULTS.md, "GPU"), fp16.
COGVIDEOX_2B_MEMORY = MemoryProfile(
    resident=14.2,
    offload_floor=10.6,
    denoise_per_mvoxel=0.09,
    decode_tiled=3.8,
    decode_untiled_per_mpixel=42.7,
    taylorseer_per_mvoxel=0.91,
)
# bf16 with the VAE in float32.
WAN_1_3B_MEMORY = MemoryProfile(
    resident=13.7,
    offload_floor=10.7,
    denoise_per_mvoxel=0.047,
    decode_tiled=1.9,
    decode_untiled_per_mpixel=21.9,
    taylorseer_per_mvoxel=1.05,
)

# Default options, chosen from the H200 measurements (bench/RESULTS.md, "GPU"):
# - VAE tiling and CPU offload are chosen per job by memory_plan: the VAE
#   untiled when the job fits (CogVideoX-2b at 720x480x49: 29 GiB peak, 1.0 s
#   faster than tiled; Wan 1.3B at 832x480x81: 22.5 GiB, 2.4 s faster), tiled
#   on smaller cards (18 and 15.6 GiB), CPU offload only where even that does
#   not fit (10.6 GiB, +8 s a job). So a 24 GB card tiles, 48 and 80 GB don't.
# - torch.compile (regional) is opt-in: 7% (CogVideoX) to 11% (Wan) faster
#   warm, lossless, but every new size recompiles (~16 s on the first job)
#   and it needs a working compiler toolchain in the worker's image.
# - TaylorSeer is opt-in: 2.2x faster whole jobs (36.0 -> 16.1 s; with
#   compile 12.0 s) but it computes only 13 of 50 steps and extrapolates the
#   rest, a visible quality cost, and it holds 15-34 GiB more (80 GB cards).
# - First-block cache: its skips depend on the weights; not measurable with
#   random twins, so off.
WAN_1_3B_SHAPE = dict(
    cuda_dtype="bfloat16",
    max_sequence_length=512,
    width=832,
    height=480,
    min_size=256,
    max_width=832,
    max_height=832,
    num_frames=81,
    max_frames=81,
    guidance_scale=5.0,
    fps=16,
    memory=WAN_1_3B_MEMORY,
)

BUILTIN_SPECS = (
    ModelSpec(
        name="tiny-random",
        description=(
            "A real CogVideoXPipeline with small random weights, built offline in code. Runs the exact code "
            "path of CogVideoX-2b in seconds on a CPU; its frames are noise."
        ),
        pipeline_class="CogVideoXPipeline",
        source=None,
        builder="generation.tiny.build_tiny_cogvideox",
        **TINY_BOUNDS,
    ),
    ModelSpec(
        name="tiny-random-wan",
        description="A real WanPipeline with small random weights, built offline in code: Wan 2.1's code path.",
        pipeline_class="WanPipeline",
        source=None,
        builder="generation.tiny.build_tiny_wan",
        guidance_scale=5.0,
        **TINY_BOUNDS,
    ),
    ModelSpec(
        name="cogvideox-2b",
        description="CogVideoX-2b (THUDM): 720x480, up to 49 frames. About 18 GB of GPU memory in fp16.",
        pipeline_class="CogVideoXPipeline",
        source="THUDM/CogVideoX-2b",
        # Trained in fp16. The original service's defaults are kept for its clients.
        cuda_dtype="float16",
        memory=COGVIDEOX_2B_MEMORY,
    ),
    ModelSpec(
        name="cogvideox-2b-random",
        description=(
            "CogVideoX-2b's full architecture with random weights, built on the GPU: the real model's speed "
            "and memory without its weights, for benchmarks. GPU only; its frames are noise."
        ),
        pipeline_class="CogVideoXPipeline",
        source=None,
        builder="generation.tiny.build_random_cogvideox_2b",
        cuda_dtype="float16",
        memory=COGVIDEOX_2B_MEMORY,
    ),
    ModelSpec(
        name="cogvideox-5b",
        description="CogVideoX-5b (THUDM): 720x480, up to 49 frames at 8 fps. About 26 GB of GPU memory in bf16.",
        pipeline_class="CogVideoXPipeline",
        source="THUDM/CogVideoX-5b",
        cuda_dtype="bfloat16",
        num_frames=49,
        guidance_scale=6.0,
        fps=8,
        enable_vae_tiling=True,
    ),
    ModelSpec(
        name="wan2.1-t2v-1.3b",
        description="Wan 2.1 text-to-video 1.3B (Wan-AI): 832x480, up to 81 frames at 16 fps. About 8 GB of GPU memory.",
        pipeline_class="WanPipeline",
        source="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
        vae_float32=True,
        **WAN_1_3B_SHAPE,
    ),
    ModelSpec(
        name="wan2.1-t2v-1.3b-random",
        description=(
            "Wan 2.1 T2V 1.3B's full architecture with random weights, built on the GPU, for benchmarks. "
            "GPU only; its frames are noise."
        ),
        pipeline_class="WanPipeline",
        source=None,
        builder="generation.tiny.build_random_wan_1_3b",
        **WAN_1_3B_SHAPE,
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
    return specs


def get_spec(name: str, specs: Mapping[str, ModelSpec] = BUILTIN_MODELS) -> ModelSpec:
    """One model of a catalogue (the built-in one unless given)."""
    if name not in specs:
        raise UnknownModel(f"unknown model {name!r}; known models: {', '.join(sorted(specs))}")
    return specs[name]
