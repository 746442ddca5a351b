"""The engine alone: options, cancellation, out-of-memory, Wan, reproducibility details."""

import dataclasses

import pytest
import torch

from generation import pipelines
from generation.pipelines import (
    Cancelled,
    GenerationParams,
    InvalidParams,
    LoadOptions,
    OutOfMemory,
    describe_run,
    generate_frames,
    load_pipeline,
    resolve_dtype,
)
from generation.registry import get_spec

TINY = get_spec("tiny-random")
TINY_WAN = get_spec("tiny-random-wan")


def params(**overrides) -> GenerationParams:
    values = dict(
        prompt="a dog running in the city", negative_prompt="", width=64, height=48, num_frames=9,
        num_inference_steps=4, guidance_scale=5.0, seed=3,
    )
    return GenerationParams(**{**values, **overrides})


pytestmark = pytest.mark.usefixtures("fresh_pipelines")


def test_the_wan_twin_is_a_real_wan_pipeline_and_returns_the_frames_asked_for():
    from diffusers import WanPipeline

    frames = generate_frames(TINY_WAN, params(num_frames=7))

    assert type(load_pipeline(TINY_WAN)) is WanPipeline
    assert frames.shape == (7, 48, 64, 3)


def test_returning_false_from_on_step_stops_before_the_next_step_and_the_pipeline_serves_the_next_run():
    seen = []

    def stop_after_two(step, total):
        seen.append(step)
        return step < 2

    with pytest.raises(Cancelled) as stopped:
        generate_frames(TINY, params(num_inference_steps=10), on_step=stop_after_two)

    assert seen == [1, 2]
    assert (stopped.value.step, stopped.value.total) == (2, 10)
    assert generate_frames(TINY, params()).shape == (9, 48, 64, 3)


def test_out_of_memory_names_the_size_asked_for_and_the_pipeline_keeps_serving():
    pipeline = load_pipeline(TINY)

    def run_out_of_memory(module, args, kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has 1.2 GiB free.")

    hook = pipeline.transformer.register_forward_pre_hook(run_out_of_memory, with_kwargs=True)
    with pytest.raises(OutOfMemory) as failure:
        generate_frames(TINY, params(num_frames=9, width=64, height=48))
    hook.remove()

    message = str(failure.value)
    assert "9 frames at 64x48 with tiny-random" in message
    assert "Tried to allocate 20.00 GiB" in message
    assert generate_frames(TINY, params()).shape == (9, 48, 64, 3)
    assert load_pipeline(TINY) is pipeline


@pytest.mark.parametrize(
    "change, message",
    [({"width": 50}, "multiple of 16"), ({"num_frames": 500}, "num_frames 500"), ({"num_inference_steps": 0}, "1-200")],
)
def test_the_engine_refuses_parameters_outside_the_spec(change, message):
    with pytest.raises(InvalidParams, match=message):
        generate_frames(TINY, params(**change))


def test_memory_and_cache_options_run_the_same_code_path():
    spec = dataclasses.replace(
        TINY, name="tiny-options", enable_vae_slicing=True, enable_vae_tiling=True, cache="first_block_cache"
    )

    frames = generate_frames(spec, params(num_frames=1, width=32, height=32))
    pipeline = load_pipeline(spec)

    assert frames.shape == (1, 32, 32, 3)
    assert pipeline.vae.use_slicing and pipeline.vae.use_tiling
    assert pipeline.transformer.is_cache_enabled


def test_a_worker_keeps_at_most_max_loaded_pipelines_least_recently_used_out():
    two = LoadOptions(max_loaded=2)
    load_pipeline(TINY, two)
    load_pipeline(TINY_WAN, two)
    load_pipeline(TINY, two)

    load_pipeline(dataclasses.replace(TINY, name="tiny-third"), two)

    assert pipelines.loaded_models() == ["tiny-random", "tiny-third"]


def test_dtypes_are_float32_on_the_cpu_unless_forced():
    assert resolve_dtype(get_spec("cogvideox-2b"), "cpu") is torch.float32
    assert resolve_dtype(get_spec("cogvideox-2b"), "cpu", "bfloat16") is torch.bfloat16


def test_the_run_is_described_well_enough_to_reproduce():
    info = describe_run(TINY)

    assert info["model"] == "tiny-random"
    assert info["pipeline"] == "CogVideoXPipeline"
    assert (info["dtype"], info["device"]) == ("float32", "cpu")
    assert info["scheduler"] == "CogVideoXDDIMScheduler"
    assert info["scheduler_config"]["num_train_timesteps"] == 1000
    assert set(info["versions"]) == {"torch", "diffusers", "transformers"}


def _count_feed_forward_runs(pipeline) -> dict:
    """How often the first block's feed-forward really computes (a cached step skips its inner layers)."""
    blocks = getattr(pipeline.transformer, "transformer_blocks", None) or pipeline.transformer.blocks
    feed_forward = getattr(blocks[0], "ff", None) or blocks[0].ffn
    runs = {"count": 0}
    feed_forward.net[0].register_forward_hook(lambda *args: runs.__setitem__("count", runs["count"] + 1))
    return runs


@pytest.mark.parametrize("spec", [TINY, TINY_WAN], ids=["cogvideox", "wan"])
def test_the_taylorseer_cache_skips_most_steps_of_the_blocks(spec):
    # diffusers' default TaylorSeer targets match no module of these models:
    # without the engine's own module names the cache silently did nothing.
    # The smallest video: what is counted is steps, whatever their size.
    small = params(num_inference_steps=20, num_frames=1, width=32, height=32)
    runs = _count_feed_forward_runs(load_pipeline(spec))
    plain = generate_frames(spec, small)
    every_step = runs["count"]
    pipelines.release_pipelines()

    cached_spec = dataclasses.replace(spec, name=f"{spec.name}-taylorseer", cache="taylorseer_cache")
    runs = _count_feed_forward_runs(load_pipeline(cached_spec))
    cached = generate_frames(cached_spec, small)

    assert every_step in (20, 40)  # CogVideoX batches the guidance pass; Wan runs it apart
    assert runs["count"] <= every_step * 0.4
    assert cached.shape == plain.shape


@pytest.mark.parametrize(
    "builder, parameters",
    [
        ("build_random_cogvideox_2b", {"transformer": 1.69e9, "text_encoder": 4.63e9, "vae": 0.216e9}),
        ("build_random_wan_1_3b", {"transformer": 1.42e9, "text_encoder": 4.63e9, "vae": 0.127e9}),
    ],
)
def test_the_full_size_random_twins_have_the_published_architectures(builder, parameters):
    # Built on the meta device: shapes and dtypes without allocating 20 GB.
    from generation import tiny

    pipeline = getattr(tiny, builder)(device="meta", dtype=torch.bfloat16)

    for name, expected in parameters.items():
        module = getattr(pipeline, name)
        assert sum(p.numel() for p in module.parameters()) == pytest.approx(expected, rel=0.01)
    # As from_pretrained(torch_dtype=bfloat16) leaves them: T5's `wo` in float32.
    dtypes = {p.dtype for p in pipeline.text_encoder.parameters()}
    assert dtypes == {torch.bfloat16, torch.float32}


@pytest.mark.parametrize(
    "tiny_name, full_name",
    [
        ("tiny-random", "cogvideox-2b-random"),
        ("tiny-random-i2v", "cogvideox-5b-i2v-random"),
        ("tiny-random-wan", "wan2.1-t2v-1.3b-random"),
        ("tiny-random-wan-i2v", "wan2.1-i2v-14b-480p-random"),
        ("tiny-random-wan-ti2v", "wan2.2-ti2v-5b-random"),
    ],
)
def test_each_tiny_twin_runs_its_full_size_twins_code_path(tiny_name, full_name):
    # Built from their specs' builders, as load_pipeline does; the full-size one on the meta device.
    from django.utils.module_loading import import_string

    tiny_spec, full_spec = get_spec(tiny_name), get_spec(full_name)
    tiny = import_string(tiny_spec.builder)()
    full = import_string(full_spec.builder)(device="meta")

    assert type(tiny).__name__ == type(full).__name__ == tiny_spec.pipeline_class == full_spec.pipeline_class
    assert {name: type(module) for name, module in tiny.components.items()} == {
        name: type(module) for name, module in full.components.items()
    }
    assert dict(tiny.scheduler.config) == dict(full.scheduler.config)
    assert tiny.config.get("expand_timesteps") == full.config.get("expand_timesteps")
    # Same kind of transformer: the same position embeddings and, for image to video, the same extra inputs.
    tiny_config, full_config = tiny.transformer.config, full.transformer.config
    rotary = "use_rotary_positional_embeddings"
    assert tiny_config.get(rotary) == full_config.get(rotary)
    for option in ("image_dim", "pos_embed_seq_len"):
        assert (tiny_config.get(option) is None) == (full_config.get(option) is None), option
    assert tiny_config.in_channels / tiny_config.out_channels == full_config.in_channels / full_config.out_channels
