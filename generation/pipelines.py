"""
Loading diffusers pipelines and turning a prompt into frames.

The engine knows nothing of jobs, HTTP or the database: it takes a model spec
and plain parameters and returns frames, so it can be tested, benchmarked and
reused alone. torch and diffusers are imported inside the functions, so web
processes and the qcluster parent never load them (a child forked after its
parent ran torch can hang, and CUDA cannot be re-initialised in a fork).
"""

import contextlib
import gc
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from django.utils.module_loading import import_string

from generation.params import GenerationParams, param_errors
from generation.registry import MemoryPlan, ModelSpec

logger = logging.getLogger(__name__)


class GenerationError(Exception):
    """A generation failed for a reason the caller can name."""


class ModelLoadError(GenerationError):
    """The pipeline could not be built or loaded (missing weights, bad path)."""

    def __init__(self, message: str, *, model: str):
        super().__init__(message)
        self.model = model


class InvalidParams(GenerationError):
    """The parameters are outside what the model can do."""


class OutOfMemory(GenerationError):
    """The device ran out of memory; its cache has been freed."""


class Cancelled(Exception):
    """The caller asked to stop (on_step returned False)."""

    def __init__(self, step: int, total: int):
        super().__init__(f"cancelled after step {step} of {total}")
        self.step = step
        self.total = total


@dataclass(frozen=True)
class LoadOptions:
    device: str = "auto"
    dtype: str = "auto"
    max_loaded: int = 1
    # The GPU memory a job may use, in GiB; None: the whole device's. Jobs
    # are planned against it (ModelSpec.memory_plan) before they start.
    gpu_memory_gib: float | None = None


# Loaded pipelines of this process, least recently used first. A GPU rarely
# holds two large models, and loading takes far longer than a job on a warm
# worker, so a worker keeps what it loaded until another model needs room.
_lock = threading.Lock()
_loaded: "OrderedDict[str, object]" = OrderedDict()
_torch_configured = False


def loaded_models() -> list[str]:
    return list(_loaded)


def resolve_device(requested: str = "auto") -> str:
    import torch

    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(spec: ModelSpec, device: str, requested: str = "auto"):
    import torch

    if requested != "auto":
        return getattr(torch, requested)
    if not device.startswith("cuda"):
        return torch.float32
    if spec.cuda_dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return getattr(torch, spec.cuda_dtype)


def configure_torch(num_threads: int) -> None:
    """Set torch's intra-op thread count once per process."""
    global _torch_configured
    if _torch_configured:
        return
    import torch

    torch.set_num_threads(num_threads)
    _torch_configured = True


def load_pipeline(spec: ModelSpec, options: LoadOptions = LoadOptions()):
    """Return the pipeline for spec, loading it on first use in this process."""
    with _lock:
        if spec.name in _loaded:
            _loaded.move_to_end(spec.name)
            return _loaded[spec.name]
        while len(_loaded) >= options.max_loaded:
            evicted, _ = _loaded.popitem(last=False)
            logger.info("unloading model %s to make room for %s", evicted, spec.name)
            free_memory()
        pipeline = _build_or_load(spec, options)
        _loaded[spec.name] = pipeline
        return pipeline


def release_pipelines() -> None:
    """Drop every loaded pipeline and give its memory back."""
    with _lock:
        _loaded.clear()
        free_memory()


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _build_or_load(spec: ModelSpec, options: LoadOptions):
    import torch

    device = resolve_device(options.device)
    dtype = resolve_dtype(spec, device, options.dtype)
    try:
        if spec.source is None:
            logger.info("building model %s in code", spec.name)
            # Built in float32, which tiny models keep on every device.
            pipeline = import_string(spec.builder)()
        else:
            import diffusers

            pipeline_class = getattr(diffusers, spec.pipeline_class)
            extra = {}
            if spec.vae_float32:
                extra["vae"] = _load_vae_float32(spec)
            logger.info("loading model %s from %s as %s on %s", spec.name, spec.source, dtype, device)
            pipeline = pipeline_class.from_pretrained(spec.source, revision=spec.revision, torch_dtype=dtype, **extra)
        _apply_memory_options(pipeline, spec, device)
    except Exception as exc:
        raise ModelLoadError(
            f"could not load model {spec.name!r} from {spec.source or spec.builder}: {exc}", model=spec.name
        ) from exc
    pipeline.set_progress_bar_config(disable=True)
    # Loading can leave large temporaries behind; return them before the first job.
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return pipeline


def _load_vae_float32(spec: ModelSpec):
    import diffusers
    import torch

    vae_class_name = {
        "WanPipeline": "AutoencoderKLWan",
        "CogVideoXPipeline": "AutoencoderKLCogVideoX",
    }.get(spec.pipeline_class, "AutoencoderKL")
    vae_class = getattr(diffusers, vae_class_name)
    return vae_class.from_pretrained(spec.source, subfolder="vae", revision=spec.revision, torch_dtype=torch.float32)


def _apply_memory_options(pipeline, spec: ModelSpec, device: str) -> None:
    if spec.enable_model_cpu_offload and device.startswith("cuda"):
        # Moves each component to the GPU only while it runs: slower, far
        # less GPU memory. It places the modules itself, so no .to(device).
        pipeline.enable_model_cpu_offload(device=device)
    else:
        pipeline.to(device)
    vae = getattr(pipeline, "vae", None)
    if spec.enable_vae_slicing and hasattr(vae, "enable_slicing"):
        vae.enable_slicing()
    if spec.enable_vae_tiling and hasattr(vae, "enable_tiling"):
        vae.enable_tiling()
    if spec.cache:
        enable_cache(pipeline.transformer, spec.cache, spec.cache_threshold)
    if spec.compile_transformer:
        compile_transformer(pipeline.transformer)


# diffusers' default TaylorSeer targets ("^blocks.*attn", matched in full)
# match no module of CogVideoX or Wan, whose attention modules are named
# attn1/attn2: the cache then silently does nothing (measured on an H200:
# the same seconds per step). Name each block's attention and feed-forward.
TAYLORSEER_MODULES = r"^(transformer_)?blocks\.\d+\.(attn1|attn2|ff|ffn)$"


def enable_cache(transformer, method: str, threshold: float = 0.05) -> None:
    """One of diffusers' caching hooks on the denoiser (registry.CACHE_METHODS)."""
    from diffusers.hooks import FirstBlockCacheConfig, TaylorSeerCacheConfig

    if method == "first_block_cache":
        config = FirstBlockCacheConfig(threshold=threshold)
    elif method == "taylorseer_cache":
        config = TaylorSeerCacheConfig(cache_identifiers=[TAYLORSEER_MODULES])
    else:
        raise ValueError(f"unknown cache method {method!r}")
    transformer.enable_cache(config)


def compile_transformer(transformer) -> None:
    """
    torch.compile the denoiser's repeated blocks, one compiled graph shared by
    all of them (diffusers' regional compilation, which it documents as
    about as fast warm as a whole-model compile for far less compile time;
    only the regional one was measured here: 16 s cold for CogVideoX-2b on
    an H200, 16% faster steps warm). Compiles on the first job, then runs faster.
    """
    if getattr(transformer, "_repeated_blocks", None):
        transformer.compile_repeated_blocks()
    elif hasattr(transformer, "transformer_blocks"):
        # CogVideoX declares no _repeated_blocks; its blocks are all alike.
        for block in transformer.transformer_blocks:
            block.compile()
    else:
        transformer.compile()


def check_params(spec: ModelSpec, params: GenerationParams) -> None:
    """The engine's own guard, for callers that did not validate: the API's check (generation/params.py)."""
    errors = param_errors(spec, params)
    if errors:
        raise InvalidParams(
            f"model {spec.name}: "
            + "; ".join(f"{name} {getattr(params, name)}: {' '.join(messages)}" for name, messages in errors.items())
        )


def generate_frames(
    spec: ModelSpec,
    params: GenerationParams,
    *,
    options: LoadOptions = LoadOptions(),
    on_step: Callable[[int, int], bool | None] | None = None,
) -> np.ndarray:
    """
    Run the pipeline and return exactly params.num_frames frames as uint8,
    shaped (frames, height, width, 3). on_step(done, total) is called after
    each denoising step; returning False stops the run with Cancelled before
    the next step (and before the VAE decode). A job that would not fit in the
    GPU's memory however it ran fails with OutOfMemory before it starts; one
    that fits runs with the fastest VAE tiling and offload that fit.
    """
    check_params(spec, params)
    pipeline = load_pipeline(spec, options)
    plan = plan_memory(spec, params, options)
    if plan is not None and not plan.fits:
        raise OutOfMemory(
            f"not started: {spec.too_large(params.num_frames, params.width, params.height, plan)}; this GPU has "
            f"{gpu_memory_gib(options):.1f} GiB. Try fewer frames or a smaller size."
        )
    with memory_plan_applied(pipeline, spec, plan, resolve_device(options.device)):
        return _generate(spec, pipeline, params, on_step)


def gpu_memory_gib(options: LoadOptions) -> float | None:
    """The memory jobs may use: the option when set, else the CUDA device's; None on a CPU."""
    if options.gpu_memory_gib is not None:
        return options.gpu_memory_gib
    device = resolve_device(options.device)
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.get_device_properties(torch.device(device)).total_memory / 1024**3


def plan_memory(spec: ModelSpec, params: GenerationParams, options: LoadOptions) -> MemoryPlan | None:
    budget = gpu_memory_gib(options)
    if budget is None or options.dtype == "float32":
        # The measured tables are for 16-bit weights.
        return None
    return spec.memory_plan(params.num_frames, params.width, params.height, budget)


@contextlib.contextmanager
def memory_plan_applied(pipeline, spec: ModelSpec, plan: MemoryPlan | None, device: str):
    """Run one job with the plan's VAE tiling and CPU offload, then put the pipeline back as the spec loads it."""
    if plan is None:
        yield
        return
    vae = pipeline.vae
    offloaded = plan.cpu_offload and not spec.enable_model_cpu_offload and device.startswith("cuda")
    if hasattr(vae, "enable_tiling"):
        vae.enable_tiling() if plan.vae_tiling else vae.disable_tiling()
    if offloaded:
        logger.info("model %s: CPU offload for this job (%.1f GiB planned)", spec.name, plan.peak_gib)
        pipeline.enable_model_cpu_offload(device=device)
    try:
        yield
    finally:
        if hasattr(vae, "enable_tiling"):
            vae.enable_tiling() if spec.enable_vae_tiling else vae.disable_tiling()
        if offloaded:
            pipeline.remove_all_hooks()
            pipeline.to(device)


def _generate(spec: ModelSpec, pipeline, params: GenerationParams, on_step) -> np.ndarray:
    import torch

    # Models want frame counts of a certain form (CogVideoX, Wan: 4k+1); ask
    # for the next valid count and trim, so the video has the frames asked for.
    frames_to_generate = spec.valid_frame_count(params.num_frames)
    total_steps = params.num_inference_steps

    def step_callback(pipe, step_index, timestep, callback_kwargs):
        if on_step is not None and on_step(step_index + 1, total_steps) is False:
            raise Cancelled(step_index + 1, total_steps)
        return callback_kwargs

    # A CPU generator gives the same noise whatever the device, so a seed
    # reproduces a video on any machine with the same model and dtype.
    generator = torch.Generator(device="cpu").manual_seed(params.seed)
    out_of_memory = None
    try:
        with torch.inference_mode():
            output = pipeline(
                prompt=params.prompt,
                negative_prompt=params.negative_prompt or None,
                width=params.width,
                height=params.height,
                num_frames=frames_to_generate,
                num_inference_steps=params.num_inference_steps,
                guidance_scale=params.guidance_scale,
                generator=generator,
                output_type="np",
                max_sequence_length=spec.max_sequence_length,
                callback_on_step_end=step_callback,
            )
    except torch.OutOfMemoryError as exc:
        out_of_memory = str(exc).strip() or "out of memory"
    except Cancelled:
        free_memory()
        raise
    if out_of_memory is not None:
        # Outside the except block, so the traceback's frames (and the
        # tensors they hold) are gone before the cache is emptied and the
        # worker takes its next job. Never retried as is: the same
        # parameters would run out again.
        free_memory()
        raise OutOfMemory(
            f"out of memory making {params.num_frames} frames at {params.width}x{params.height} "
            f"with {spec.name}: {out_of_memory.splitlines()[0]} "
            "Try fewer frames, a smaller size, or a model with CPU offload."
        )
    video = np.asarray(output.frames[0])
    if video.shape[0] < params.num_frames:
        raise GenerationError(
            f"model {spec.name} produced {video.shape[0]} frames, fewer than the {params.num_frames} asked for"
        )
    video = video[: params.num_frames]
    return (np.clip(video, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def describe_run(spec: ModelSpec, options: LoadOptions = LoadOptions()) -> dict:
    """What decides a video besides its parameters: for reproducing it later."""
    import diffusers
    import torch
    import transformers

    pipeline = load_pipeline(spec, options)
    device = resolve_device(options.device)
    name_or_path = pipeline.config.get("_name_or_path") or spec.source or spec.builder
    revision = spec.revision
    if revision is None and "/snapshots/" in str(name_or_path):
        # A Hugging Face cache path names the commit it holds.
        revision = str(name_or_path).split("/snapshots/")[1].split("/")[0]
    return {
        "model": spec.name,
        "pipeline": type(pipeline).__name__,
        "source": str(name_or_path),
        "revision": revision,
        "dtype": str(pipeline.transformer.dtype).removeprefix("torch."),
        "device": device,
        "scheduler": type(pipeline.scheduler).__name__,
        # Through JSON, so numpy values and tuples become plain data for the job row.
        "scheduler_config": json.loads(
            json.dumps({k: v for k, v in dict(pipeline.scheduler.config).items() if not k.startswith("_")}, default=str)
        ),
        "versions": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
        },
    }
