import dataclasses

import numpy as np
import pytest

from generation import pipelines
from generation.pipelines import GenerationParams, ModelLoadError, generate_frames, load_pipeline
from generation.registry import get_spec

TINY = get_spec("tiny-random")


def params(**overrides) -> GenerationParams:
    values = dict(
        prompt="a cat running over the mountains at sunset",
        negative_prompt="",
        width=64,
        height=48,
        num_frames=9,
        num_inference_steps=2,
        guidance_scale=4.5,
        seed=7,
    )
    values.update(overrides)
    return GenerationParams(**values)


pytestmark = pytest.mark.usefixtures("fresh_pipelines")


def test_tiny_random_is_a_real_cogvideox_pipeline():
    from diffusers import CogVideoXPipeline

    pipeline = load_pipeline(TINY)

    assert type(pipeline) is CogVideoXPipeline
    assert pipeline.vae_scale_factor_spatial == 8
    assert pipeline.vae_scale_factor_temporal == 4
    assert not pipeline.transformer.training and not pipeline.vae.training and not pipeline.text_encoder.training


def test_the_tiny_tokenizer_turns_words_into_known_pieces():
    tokenizer = load_pipeline(TINY).tokenizer

    ids = tokenizer("A cat running, over zebra-like mountains!")["input_ids"]

    assert tokenizer.unk_token_id not in ids


# How a count is rounded up is the catalogue's (tests/generation/test_registry.py);
# here, that what was generated beyond the count asked for is trimmed.
@pytest.mark.parametrize("num_frames", [1, 6])
def test_it_returns_exactly_the_frames_asked_for(num_frames):
    frames = generate_frames(TINY, params(num_frames=num_frames))

    assert frames.shape == (num_frames, 48, 64, 3)
    assert frames.dtype == np.uint8


@pytest.mark.parametrize("spec", [TINY, get_spec("tiny-random-wan")], ids=["cogvideox", "wan"])
def test_the_same_seed_gives_the_same_frames_and_another_seed_does_not(spec):
    first = generate_frames(spec, params(seed=11, num_frames=1, width=32, height=32))
    again = generate_frames(spec, params(seed=11, num_frames=1, width=32, height=32))
    other = generate_frames(spec, params(seed=12, num_frames=1, width=32, height=32))

    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_it_reports_every_denoising_step():
    steps = []

    generate_frames(TINY, params(num_inference_steps=4, num_frames=1, width=32, height=32),
                    on_step=lambda done, total: steps.append((done, total)))

    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_a_pipeline_is_loaded_once_per_process():
    assert load_pipeline(TINY) is load_pipeline(TINY)


def test_a_model_saved_to_disk_loads_with_from_pretrained_and_gives_the_same_frames(tmp_path):
    from diffusers import CogVideoXPipeline

    expected = generate_frames(TINY, params(num_frames=1, width=32, height=32))
    load_pipeline(TINY).save_pretrained(tmp_path / "CogVideoX-tiny")
    pipelines.release_pipelines()
    # The real CogVideoX-2b spec, pointed at a local directory as an operator
    # would, with the tiny model's text length and size bounds.
    real_spec = dataclasses.replace(
        get_spec("cogvideox-2b"),
        source=str(tmp_path / "CogVideoX-tiny"),
        max_sequence_length=TINY.max_sequence_length,
        min_size=TINY.min_size,
    )

    loaded = load_pipeline(real_spec)
    frames = generate_frames(real_spec, params(num_frames=1, width=32, height=32))

    assert type(loaded) is CogVideoXPipeline
    assert np.array_equal(frames, expected)
    assert pipelines.describe_run(real_spec)["source"] == str(tmp_path / "CogVideoX-tiny")


@pytest.mark.parametrize(
    "tiny, real, float32_parts",
    [
        ("tiny-random-wan", "wan2.1-t2v-1.3b", ["vae"]),
        # Wan 2.1 I2V's CLIP image encoder too, as its model card loads it.
        ("tiny-random-wan-i2v", "wan2.1-i2v-14b-480p", ["vae", "image_encoder"]),
    ],
)
def test_a_wan_model_saved_to_disk_loads_with_its_vae_kept_in_float32(tmp_path, tiny, real, float32_parts):
    import torch

    load_pipeline(get_spec(tiny)).save_pretrained(tmp_path / "wan")
    pipelines.release_pipelines()
    spec = dataclasses.replace(get_spec(real), source=str(tmp_path / "wan"), max_sequence_length=32, min_size=32)

    pipeline = load_pipeline(spec, pipelines.LoadOptions(dtype="bfloat16"))

    assert [getattr(pipeline, part).dtype for part in float32_parts] == [torch.float32] * len(float32_parts)
    assert pipeline.transformer.dtype == torch.bfloat16


def test_switching_models_keeps_one_pipeline_loaded(tmp_path):
    load_pipeline(TINY).save_pretrained(tmp_path / "saved")

    load_pipeline(dataclasses.replace(get_spec("cogvideox-2b"), source=str(tmp_path / "saved")))

    assert pipelines.loaded_models() == ["cogvideox-2b"]


def test_missing_weights_fail_with_a_readable_model_load_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    with pytest.raises(ModelLoadError, match="could not load model 'cogvideox-2b' from .*not-there"):
        load_pipeline(dataclasses.replace(get_spec("cogvideox-2b"), source=str(tmp_path / "not-there")))
