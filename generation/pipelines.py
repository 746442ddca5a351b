"""
Loading diffusers pipelines and turning a prompt into frames.

The engine knows nothing of jobs, HTTP or the database: it takes a model spec
and plain parameters and returns frames, so it can be tested, benchmarked and
reused alone. torch and diffusers are imported inside the functions, so web
processes and the qcluster parent never load them (a child forked after its
parent ran torch can hang, and CUDA cannot be re-initialised in a fork).
"""

import contextlib
import dataclasses
import gc
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from django.utils.module_loading import import_string

from generation.params import TEXT_TO_VIDEO, GenerationParams, mode_for
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
    """
    The caller asked to stop (on_step returned False). checkpoint(), where
    given, serializes the state after `step` (resume_from takes it), for a
    caller that stops to go on later rather than to give up.
    """

    def __init__(self, step: int, total: int, checkpoint: "Callable[[], bytes] | None" = None):
        super().__init__(f"cancelled after step {step} of {total}")
        self.step = step
        self.total = total
        self.checkpoint = checkpoint


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
# A loaded model's pipeline for its image modes, where that is another
# class (ModelSpec.image_pipeline_class): made from the loaded one on first use.
_image_pipelines: dict[str, object] = {}
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
            _image_pipelines.pop(evicted, None)
            logger.info("unloading model %s to make room for %s", evicted, spec.name)
            free_memory()
        pipeline = _build_or_load(spec, options)
        _loaded[spec.name] = pipeline
        return pipeline


def release_pipelines() -> None:
    """Drop every loaded pipeline and give its memory back."""
    with _lock:
        _loaded.clear()
        _image_pipelines.clear()
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
            if spec.image_encoder_float32:
                extra["image_encoder"] = _load_image_encoder_float32(spec)
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
        "WanImageToVideoPipeline": "AutoencoderKLWan",
        "CogVideoXPipeline": "AutoencoderKLCogVideoX",
        "CogVideoXImageToVideoPipeline": "AutoencoderKLCogVideoX",
    }.get(spec.pipeline_class, "AutoencoderKL")
    vae_class = getattr(diffusers, vae_class_name)
    return vae_class.from_pretrained(spec.source, subfolder="vae", revision=spec.revision, torch_dtype=torch.float32)


def _load_image_encoder_float32(spec: ModelSpec):
    import torch
    from transformers import CLIPVisionModel

    return CLIPVisionModel.from_pretrained(
        spec.source, subfolder="image_encoder", revision=spec.revision, torch_dtype=torch.float32
    )


def pipeline_for_mode(spec: ModelSpec, pipeline, mode: str):
    """
    The pipeline that runs a mode: the loaded one, or for the image modes of
    a spec with an image_pipeline_class, that class built on the loaded
    one's modules (nothing is loaded twice), once per load.
    """
    if mode == TEXT_TO_VIDEO or spec.image_pipeline_class is None:
        return pipeline
    with _lock:
        image_pipeline = _image_pipelines.get(spec.name)
        if image_pipeline is None or _loaded.get(spec.name) is not pipeline:
            image_pipeline = share_modules(pipeline, spec.image_pipeline_class)
            if _loaded.get(spec.name) is pipeline:
                _image_pipelines[spec.name] = image_pipeline
        return image_pipeline


def share_modules(pipeline, class_name: str):
    """
    A pipeline of another diffusers class on the same module objects and
    configuration, as DiffusionPipeline.from_pipe makes one, but without
    its final cast of every module to one dtype (float32 unless told), which
    would convert the shared modules in place: a bf16 transformer beside a
    float32 VAE would come out all float32, or all bf16.
    """
    import diffusers

    target = getattr(diffusers, class_name)
    modules, options = target._get_signature_keys(target)
    components = pipeline.components
    shared = target(
        **{name: components.get(name) for name in modules},
        **{name: pipeline.config[name] for name in options if name in pipeline.config},
    )
    shared.set_progress_bar_config(disable=True)
    return shared


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
# attn1/attn2: the cache then silently does nothing (bench/RESULTS.md, GPU).
# Name each block's attention and feed-forward.
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
    its cost and gain are in bench/RESULTS.md, GPU). Compiles on the first
    job, then runs faster.
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
    """The engine's own guard, for callers that did not validate: the API's check (ModelSpec.param_errors)."""
    errors = spec.param_errors(params)
    if errors:
        raise InvalidParams(
            f"model {spec.name}: "
            + "; ".join(f"{name} {getattr(params, name)}: {' '.join(messages)}" for name, messages in errors.items())
        )


def check_images(spec: ModelSpec, params: GenerationParams, image, last_image) -> str:
    """The mode of a run given its frames, refused (InvalidParams) where the model lacks it or the frames are unfit."""
    try:
        mode = mode_for(image is not None, last_image is not None)
    except ValueError as exc:
        raise InvalidParams(f"model {spec.name}: {exc}")
    if mode not in spec.modes:
        raise InvalidParams(f"model {spec.name} cannot do {mode}; it does {', '.join(spec.modes)}")
    for name, frame in (("image", image), ("last_image", last_image)):
        if frame is None:
            continue
        if getattr(frame, "mode", None) != "RGB":
            raise InvalidParams(f"{name} must be an RGB PIL image (generation.images.prepare_image makes one)")
        if frame.size != (params.width, params.height):
            raise InvalidParams(
                f"{name} is {frame.size[0]}x{frame.size[1]}, not the video's {params.width}x{params.height}: "
                "fit it first (generation.images.prepare_image)"
            )
    return mode


def generate_frames(
    spec: ModelSpec,
    params: GenerationParams,
    *,
    image=None,
    last_image=None,
    options: LoadOptions = LoadOptions(),
    on_step: Callable[[int, int], bool | None] | None = None,
    on_latents: Callable[[int, "torch.Tensor"], None] | None = None,
    resume_from: bytes | None = None,
    on_resume: Callable[[int, str | None], None] | None = None,
    checkpoint_every: float | None = None,
    on_checkpoint: Callable[[int, bytes], None] | None = None,
) -> np.ndarray:
    """
    Run the pipeline and return exactly params.num_frames frames as uint8,
    shaped (frames, height, width, 3). image and last_image (PIL RGB, already
    params.width x params.height: generation.images.prepare_image) are the
    first and last frames to start from; the mode they make
    (params.mode_for) must be one of the spec's. on_step(done, total) is
    called after each denoising step; returning False stops the run with
    Cancelled before the next step (and before the VAE decode). A job that
    would not fit in the GPU's memory however it ran fails with OutOfMemory
    before it starts; one that fits runs with the fastest VAE tiling and
    offload that fit.

    Checkpoints (generation/denoise.py): at a step boundary, once at least
    checkpoint_every seconds have passed since the loop started or last
    saved, on_checkpoint(step, state) is given the state after that step as
    bytes. resume_from, such bytes, continues the run after its step, with
    the frames an uninterrupted run gives; on_resume(step, reason) then says
    where it went on from: the saved step, or 0 with the reason when the
    state cannot be used (unreadable, other versions, model or parameters),
    which is never an error. on_latents(step, latents) sees the latents after
    each step.
    """
    mode = check_images(spec, params, image, last_image)
    check_params(spec, params)
    pipeline = pipeline_for_mode(spec, load_pipeline(spec, options), mode)
    plan = plan_memory(spec, params, options)
    if plan is not None and not plan.fits:
        raise OutOfMemory(
            f"not started: {spec.too_large(params.num_frames, params.width, params.height, plan)}; this GPU has "
            f"{gpu_memory_gib(options):.1f} GiB. Try fewer frames or a smaller size."
        )
    with memory_plan_applied(pipeline, spec, plan, resolve_device(options.device)):
        return _generate(
            spec,
            pipeline,
            params,
            on_step,
            image=image,
            last_image=last_image,
            checkpoints=_Checkpoints(resume_from, on_resume, checkpoint_every, on_checkpoint, on_latents),
            options=options,
        )


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


@dataclass(frozen=True)
class _Checkpoints:
    resume_from: bytes | None = None
    on_resume: Callable[[int, str | None], None] | None = None
    every: float | None = None
    on_checkpoint: Callable[[int, bytes], None] | None = None
    on_latents: Callable | None = None


def _generate(
    spec: ModelSpec,
    pipeline,
    params: GenerationParams,
    on_step,
    *,
    image=None,
    last_image=None,
    checkpoints: _Checkpoints = _Checkpoints(),
    options: LoadOptions = LoadOptions(),
) -> np.ndarray:
    import torch

    from generation import denoise

    # Models want frame counts of a certain form (CogVideoX, Wan: 4k+1); ask
    # for the next valid count and trim, so the video has the frames asked for.
    frames_to_generate = spec.valid_frame_count(params.num_frames)
    total_steps = params.num_inference_steps
    # A CPU generator gives the same noise whatever the device, so a seed
    # reproduces a video on any machine with the same model and dtype.
    generator = torch.Generator(device="cpu").manual_seed(params.seed)
    call = {
        "prompt": params.prompt,
        "negative_prompt": params.negative_prompt or None,
        "width": params.width,
        "height": params.height,
        "num_frames": frames_to_generate,
        "num_inference_steps": params.num_inference_steps,
        "guidance_scale": params.guidance_scale,
        "generator": generator,
        "max_sequence_length": spec.max_sequence_length,
        "image": image,
        "last_image": last_image,
    }
    family_class = denoise.family_for(pipeline)
    out_of_memory = None
    try:
        with torch.inference_mode():
            identity = checkpoint_identity(spec, pipeline, params, image, last_image, options)
            family = family_class(pipeline, call)
            start = 0
            if checkpoints.resume_from is not None:
                start, reason = _resume(family, checkpoints.resume_from, identity, total_steps)
                if reason is not None and start == 0:
                    # A failed restore may have changed the generator or scheduler: prepare again.
                    generator.manual_seed(params.seed)
                    family = family_class(pipeline, call)
                if checkpoints.on_resume is not None:
                    checkpoints.on_resume(start, reason)

            def state() -> bytes:
                return denoise.state_bytes(
                    {"format": denoise.STATE_FORMAT, "identity": identity, "step": family.done, **family.capture()}
                )

            last_saved = time.monotonic()

            def on_step_end(done: int) -> None:
                nonlocal last_saved
                family.done = done
                if checkpoints.on_latents is not None:
                    checkpoints.on_latents(done, family.latents)
                if (
                    checkpoints.on_checkpoint is not None
                    and checkpoints.every is not None
                    and done < total_steps
                    and time.monotonic() - last_saved >= checkpoints.every
                ):
                    checkpoints.on_checkpoint(done, state())
                    last_saved = time.monotonic()
                if on_step is not None and on_step(done, total_steps) is False:
                    raise Cancelled(done, total_steps, checkpoint=state)

            family.done = start
            denoise.run_steps(family, start, on_step_end)
            video = family.decode()
            pipeline.maybe_free_model_hooks()
    except torch.OutOfMemoryError as exc:
        out_of_memory = str(exc).strip() or "out of memory"
    except Cancelled:
        pipeline.maybe_free_model_hooks()
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
    video = np.asarray(video[0])
    if video.shape[0] < params.num_frames:
        raise GenerationError(
            f"model {spec.name} produced {video.shape[0]} frames, fewer than the {params.num_frames} asked for"
        )
    video = video[: params.num_frames]
    return (np.clip(video, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def checkpoint_identity(spec: ModelSpec, pipeline, params: GenerationParams, image, last_image, options) -> dict:
    """What a saved state is only valid with: software, model, device type, and a digest of the inputs."""
    import hashlib

    import diffusers
    import torch

    inputs = hashlib.sha256(
        json.dumps({**dataclasses.asdict(params), "fps": None, "model_name": spec.name}, sort_keys=True).encode()
    )
    for frame in (image, last_image):
        inputs.update(b"-" if frame is None else frame.tobytes())
    name_or_path = str(pipeline.config.get("_name_or_path") or spec.source or spec.builder)
    return {
        "versions": {"diffusers": diffusers.__version__, "torch": torch.__version__},
        "model": {
            "name": spec.name,
            "source": spec.source or spec.builder,
            "revision": spec.revision or _snapshot_revision(name_or_path),
            "pipeline": type(pipeline).__name__,
            "scheduler": type(pipeline.scheduler).__name__,
            "dtype": str(pipeline.transformer.dtype),
        },
        "device_type": torch.device(resolve_device(options.device)).type,
        "inputs": inputs.hexdigest(),
    }


def _snapshot_revision(name_or_path: str) -> str | None:
    # A Hugging Face cache path names the commit it holds.
    if "/snapshots/" in name_or_path:
        return name_or_path.split("/snapshots/")[1].split("/")[0]
    return None


def checkpoint_unusable(saved: dict, identity: dict, total_steps: int) -> str | None:
    """Why a loaded state cannot continue this run, or None when it can."""
    from generation.denoise import STATE_FORMAT

    if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT:
        return f"checkpoint format {saved.get('format') if isinstance(saved, dict) else None!r}, not {STATE_FORMAT}"
    theirs = saved.get("identity") or {}
    for name, value in identity["versions"].items():
        if theirs.get("versions", {}).get(name) != value:
            return f"made with {name} {theirs.get('versions', {}).get(name)}, this worker has {value}"
    for name, value in identity["model"].items():
        if theirs.get("model", {}).get(name) != value:
            return f"made with model {name} {theirs.get('model', {}).get(name)!r}, this worker has {value!r}"
    if theirs.get("device_type") != identity["device_type"]:
        return f"made on a {theirs.get('device_type')} device, this worker is {identity['device_type']}"
    if theirs.get("inputs") != identity["inputs"]:
        return "made for other parameters or input images"
    if not isinstance(saved.get("step"), int) or not 0 < saved["step"] <= total_steps:
        return f"step {saved.get('step')!r} is outside 1..{total_steps}"
    return None


def _resume(family, data: bytes, identity: dict, total_steps: int) -> tuple[int, str | None]:
    """Restore a saved state into a prepared run: (the step to go on from, None), or (0, why not)."""
    from generation.denoise import state_from_bytes

    try:
        saved = state_from_bytes(data)
    except Exception as exc:
        return 0, f"unreadable: {exc.__class__.__name__}: {str(exc)[:200]}"
    reason = checkpoint_unusable(saved, identity, total_steps)
    if reason is not None:
        return 0, reason
    try:
        family.restore(saved)
    except Exception as exc:
        return 0, f"could not be restored: {exc.__class__.__name__}: {str(exc)[:200]}"
    return saved["step"], None


def describe_run(spec: ModelSpec, options: LoadOptions = LoadOptions()) -> dict:
    """What decides a video besides its parameters: for reproducing it later."""
    import diffusers
    import torch
    import transformers

    pipeline = load_pipeline(spec, options)
    device = resolve_device(options.device)
    name_or_path = pipeline.config.get("_name_or_path") or spec.source or spec.builder
    revision = spec.revision or _snapshot_revision(str(name_or_path))
    return {
        "model": spec.name,
        "pipeline": type(pipeline).__name__,
        # The class each of the model's modes runs.
        "pipelines": {
            mode: (spec.image_pipeline_class if mode != TEXT_TO_VIDEO and spec.image_pipeline_class else
                   type(pipeline).__name__)
            for mode in spec.modes
        },
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
