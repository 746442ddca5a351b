"""Image to video through the real pipelines: the tiny twins of each image model, modes, determinism."""

import dataclasses
import io

import numpy as np
import pytest
import torch
from PIL import Image

from generation import pipelines
from generation.images import prepare_image
from generation.params import FIRST_LAST_FRAME, IMAGE_TO_VIDEO, TEXT_TO_VIDEO
from generation.pipelines import (
    GenerationParams,
    InvalidParams,
    describe_run,
    generate_frames,
    load_pipeline,
    pipeline_for_mode,
)
from generation.registry import get_spec

pytestmark = pytest.mark.usefixtures("fresh_pipelines")

IMAGE_MODELS = ["tiny-random-i2v", "tiny-random-wan-i2v", "tiny-random-wan-flf2v", "tiny-random-wan-ti2v"]
# Multiples of 32, for Wan 2.2's 16x VAE and 2x2 patches.
WIDTH, HEIGHT = 64, 32


def params(**overrides) -> GenerationParams:
    values = dict(
        prompt="a bird flying over the sea", negative_prompt="", width=WIDTH, height=HEIGHT, num_frames=5,
        num_inference_steps=2, guidance_scale=5.0, seed=5,
    )
    return GenerationParams(**{**values, **overrides})


def picture(seed: int, width: int = WIDTH, height: int = HEIGHT) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def frames_for(spec, seed: int = 1) -> dict:
    """The frames each model starts from: a first one, and a last one where that is its mode."""
    given = {"image": picture(seed)}
    if FIRST_LAST_FRAME in spec.modes:
        given["last_image"] = picture(seed + 100)
    return given


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_each_tiny_image_model_returns_exactly_the_frames_asked_for(name):
    spec = get_spec(name)

    frames = generate_frames(spec, params(num_frames=6), **frames_for(spec))

    assert frames.shape == (6, HEIGHT, WIDTH, 3)
    assert frames.dtype == np.uint8


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_the_same_image_and_seed_give_the_same_frames_and_another_image_does_not(name):
    spec = get_spec(name)

    first = generate_frames(spec, params(), **frames_for(spec, seed=1))
    again = generate_frames(spec, params(), **frames_for(spec, seed=1))
    other = generate_frames(spec, params(), **frames_for(spec, seed=2))

    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_first_last_frame_depends_on_the_last_frame_too():
    spec = get_spec("tiny-random-wan-flf2v")

    one = generate_frames(spec, params(), image=picture(1), last_image=picture(2))
    other = generate_frames(spec, params(), image=picture(1), last_image=picture(3))

    assert not np.array_equal(one, other)


def test_the_tiny_models_are_the_real_pipeline_classes():
    from diffusers import CogVideoXImageToVideoPipeline, WanImageToVideoPipeline, WanPipeline
    from transformers import CLIPVisionModel

    wan_i2v = load_pipeline(get_spec("tiny-random-wan-i2v"), pipelines.LoadOptions(max_loaded=4))

    assert type(load_pipeline(get_spec("tiny-random-i2v"), pipelines.LoadOptions(max_loaded=4))) is (
        CogVideoXImageToVideoPipeline
    )
    assert type(wan_i2v) is WanImageToVideoPipeline
    assert isinstance(wan_i2v.image_encoder, CLIPVisionModel)
    assert wan_i2v.transformer.config.image_dim == wan_i2v.image_encoder.config.hidden_size
    ti2v = load_pipeline(get_spec("tiny-random-wan-ti2v"), pipelines.LoadOptions(max_loaded=4))
    assert type(ti2v) is WanPipeline and ti2v.config.expand_timesteps


def test_text_and_image_model_does_both_on_one_set_of_modules():
    spec = get_spec("tiny-random-wan-ti2v")
    pipeline = load_pipeline(spec)

    text = generate_frames(spec, params())
    image = generate_frames(spec, params(), image=picture(1))
    image_pipeline = pipeline_for_mode(spec, pipeline, IMAGE_TO_VIDEO)

    assert text.shape == image.shape == (5, HEIGHT, WIDTH, 3)
    assert type(image_pipeline).__name__ == "WanImageToVideoPipeline"
    assert image_pipeline.config.expand_timesteps
    assert image_pipeline.transformer is pipeline.transformer and image_pipeline.vae is pipeline.vae
    assert pipeline_for_mode(spec, pipeline, IMAGE_TO_VIDEO) is image_pipeline
    assert pipeline_for_mode(spec, pipeline, TEXT_TO_VIDEO) is pipeline


def test_the_image_pipeline_leaves_the_shared_modules_dtypes_alone():
    # diffusers' from_pipe would cast every shared module to one dtype.
    spec = get_spec("tiny-random-wan-ti2v")
    pipeline = load_pipeline(spec)
    pipeline.transformer.to(torch.bfloat16)

    pipeline_for_mode(spec, pipeline, IMAGE_TO_VIDEO)

    assert pipeline.transformer.dtype == torch.bfloat16
    assert pipeline.vae.dtype == torch.float32


def test_describe_run_names_the_class_each_mode_runs():
    info = describe_run(get_spec("tiny-random-wan-ti2v"))

    assert info["pipeline"] == "WanPipeline"
    assert info["pipelines"] == {TEXT_TO_VIDEO: "WanPipeline", IMAGE_TO_VIDEO: "WanImageToVideoPipeline"}


@pytest.mark.parametrize(
    "name, given, message",
    [
        ("tiny-random", {"image": True}, "cannot do image-to-video; it does text-to-video"),
        ("tiny-random-wan-i2v", {}, "cannot do text-to-video; it does image-to-video"),
        ("tiny-random-i2v", {"image": True, "last_image": True}, "cannot do first-last-frame"),
        ("tiny-random-wan-flf2v", {"image": True}, "cannot do image-to-video; it does first-last-frame"),
        ("tiny-random-wan-ti2v", {"last_image": True}, "a last image needs a first image"),
    ],
)
def test_a_mode_the_model_lacks_is_invalid_params_before_anything_is_loaded(name, given, message):
    frames = {key: picture(1) for key in given}

    with pytest.raises(InvalidParams, match=message):
        generate_frames(get_spec(name), params(), **frames)

    assert pipelines.loaded_models() == []


def test_an_image_of_another_size_than_the_video_is_invalid_params():
    with pytest.raises(InvalidParams, match="image is 48x32, not the video's 64x32"):
        generate_frames(get_spec("tiny-random-i2v"), params(), image=picture(1, width=48))
    with pytest.raises(InvalidParams, match="last_image is 64x64"):
        generate_frames(
            get_spec("tiny-random-wan-flf2v"), params(), image=picture(1), last_image=picture(2, height=64)
        )


def test_an_image_that_is_not_rgb_is_invalid_params():
    with pytest.raises(InvalidParams, match="RGB"):
        generate_frames(get_spec("tiny-random-i2v"), params(), image=picture(1).convert("L"))


def test_an_uploaded_image_goes_through_prepare_image_then_the_pipeline():
    buffer = io.BytesIO()
    Image.new("RGBA", (400, 300), (255, 0, 0, 255)).save(buffer, format="PNG")
    # A small default area, so the job is small: 4:3 at 64x48's area is 64x48.
    spec = dataclasses.replace(get_spec("tiny-random-i2v"), width=64, height=48)
    width, height = spec.size_for_aspect(400, 300)

    image = prepare_image(buffer.getvalue(), width, height, "crop")
    frames = generate_frames(spec, params(width=width, height=height), image=image)

    assert (width, height) == (64, 48)
    assert frames.shape == (5, height, width, 3)


@pytest.mark.parametrize(
    "builder, parameters",
    [
        # About the published checkpoints' sizes: transformer 16.4 B (the 14 B
        # and its image cross-attention), CLIP ViT-H/14's vision tower 0.63 B,
        # the Wan 2.1 VAE 0.127 B.
        ("build_random_wan_i2v_14b", {"transformer": 16.4e9, "image_encoder": 0.632e9, "vae": 0.127e9}),
        # Transformer 5.0 B; Wan 2.2's VAE 0.70 B (2.8 GB in float32).
        ("build_random_wan_ti2v_5b", {"transformer": 5.0e9, "vae": 0.705e9}),
        # Transformer 5.6 B (5 B's, twice the input channels, learned positions); VAE as CogVideoX-2b's.
        ("build_random_cogvideox_5b_i2v", {"transformer": 5.6e9, "vae": 0.216e9}),
    ],
)
def test_the_full_size_random_image_twins_have_the_published_architectures(builder, parameters):
    from generation import tiny

    pipeline = getattr(tiny, builder)(device="meta", dtype=torch.bfloat16)

    for name, expected in parameters.items():
        module = getattr(pipeline, name)
        assert sum(p.numel() for p in module.parameters()) == pytest.approx(expected, rel=0.03), name
    assert pipeline.transformer.dtype == torch.bfloat16
