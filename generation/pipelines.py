"""
Loading diffusers pipelines and turning a prompt into frames.

The engine knows nothing of jobs, HTTP or the database: it takes a model spec
and plain parameters and returns frames, so it can be tested, benchmarked and
reused alone. torch and diffusers are imported inside the functions, so web
processes and the qcluster parent never load them (a child forked after its
parent ran torch can hang, and CUDA cannot be re-initialised in a fork).
"""

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from django.utils.module_loading import import_string

from generation.registry import ModelSpec

logger = logging.getLogger(__name__)


class ModelLoadError(Exception):
    """The pipeline could not be built or loaded (missing weights, bad path)."""


@dataclass(frozen=True)
class GenerationParams:
    prompt: str
    negative_prompt: str
    width: int
    height: int
    num_frames: int
    num_inference_steps: int
    guidance_scale: float
    seed: int


# One pipeline per process: a GPU worker cannot hold two large models, and
# loading one takes far longer than a job on a warm worker.
_lock = threading.Lock()
_loaded: dict[str, object] = {}
_torch_configured = False


def resolve_device(requested: str = "auto") -> str:
    import torch

    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def configure_torch(num_threads: int) -> None:
    """Set torch's intra-op thread count once per process."""
    global _torch_configured
    if _torch_configured:
        return
    import torch

    torch.set_num_threads(num_threads)
    _torch_configured = True


def load_pipeline(spec: ModelSpec, *, device: str = "auto"):
    """Return the pipeline for spec, loading it on first use in this process."""
    with _lock:
        if spec.name in _loaded:
            return _loaded[spec.name]
        release_pipelines()
        pipeline = _build_or_load(spec, resolve_device(device))
        _loaded[spec.name] = pipeline
        return pipeline


def release_pipelines() -> None:
    """Drop every loaded pipeline and give its GPU memory back."""
    if not _loaded:
        return
    _loaded.clear()
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _build_or_load(spec: ModelSpec, device: str):
    import torch

    dtype = getattr(torch, spec.cuda_dtype) if device.startswith("cuda") else torch.float32
    source = spec.source_for_loading()
    try:
        if spec.builder and source is None:
            logger.info("building model %s in code", spec.name)
            # Built in float32; its dtype stays whatever the device.
            pipeline = import_string(spec.builder)()
        else:
            import diffusers

            pipeline_class = getattr(diffusers, spec.pipeline_class)
            logger.info("loading model %s from %s as %s", spec.name, source, dtype)
            pipeline = pipeline_class.from_pretrained(source, torch_dtype=dtype)
        pipeline.to(device)
    except Exception as exc:
        raise ModelLoadError(f"could not load model {spec.name!r} from {source or spec.builder}: {exc}") from exc
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def generate_frames(
    spec: ModelSpec,
    params: GenerationParams,
    *,
    device: str = "auto",
    on_step: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """
    Run the pipeline and return exactly params.num_frames frames as uint8,
    shaped (frames, height, width, 3). on_step(done, total) is called after
    each denoising step.
    """
    import torch

    pipeline = load_pipeline(spec, device=device)
    # Models want frame counts of a certain form (CogVideoX: 4k+1); ask for
    # the next valid count and trim, so the video has the frames requested.
    frames_to_generate = spec.valid_frame_count(params.num_frames)
    total_steps = params.num_inference_steps

    def step_callback(pipe, step_index, timestep, callback_kwargs):
        if on_step is not None:
            on_step(step_index + 1, total_steps)
        return callback_kwargs

    # A CPU generator gives the same noise whatever the device, so a seed
    # reproduces a video on any machine with the same model and dtype.
    generator = torch.Generator(device="cpu").manual_seed(params.seed)
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
    video = np.asarray(output.frames[0])
    if video.shape[0] < params.num_frames:
        raise RuntimeError(
            f"model {spec.name} produced {video.shape[0]} frames, fewer than the {params.num_frames} asked for"
        )
    video = video[: params.num_frames]
    return (np.clip(video, 0.0, 1.0) * 255.0).round().astype(np.uint8)
