"""The model catalogue: plain data, no settings (the deployment's policy is tests/jobs/test_deployment.py)."""

import pytest

from generation.params import (
    FIRST_LAST_FRAME,
    GENERATION_MODES,
    IMAGE_TO_VIDEO,
    TEXT_TO_VIDEO,
    GenerationParams,
    mode_for,
)
from generation.registry import BUILTIN_MODELS, CatalogueError, UnknownModel, catalogue, get_spec


def test_it_ships_the_real_models_and_their_tiny_twins():
    assert {"cogvideox-2b", "cogvideox-5b", "wan2.1-t2v-1.3b", "tiny-random", "tiny-random-wan"} <= set(BUILTIN_MODELS)
    assert get_spec("cogvideox-2b").pipeline_class == get_spec("tiny-random").pipeline_class == "CogVideoXPipeline"
    assert get_spec("wan2.1-t2v-1.3b").pipeline_class == get_spec("tiny-random-wan").pipeline_class == "WanPipeline"


# 5 and 49 are already of the form: kept as they are, not rounded past.
@pytest.mark.parametrize("asked, generated", [(1, 1), (2, 5), (5, 5), (6, 9), (36, 37), (49, 49)])
def test_cogvideox_frame_counts_round_up_to_4k_plus_1(asked, generated):
    assert get_spec("cogvideox-2b").valid_frame_count(asked) == generated


@pytest.mark.parametrize("asked, generated", [(1, 1), (2, 5), (36, 37), (80, 81), (81, 81)])
def test_wan_frame_counts_round_up_to_4k_plus_1(asked, generated):
    assert get_spec("wan2.1-t2v-1.3b").valid_frame_count(asked) == generated


def test_overrides_change_a_builtin_spec():
    spec = catalogue({"cogvideox-2b": {"source": "/models/cogvideox", "enable_model_cpu_offload": True}})["cogvideox-2b"]

    assert (spec.source, spec.enable_model_cpu_offload, spec.max_frames) == ("/models/cogvideox", True, 49)
    assert BUILTIN_MODELS["cogvideox-2b"].source == "THUDM/CogVideoX-2b"


def test_overrides_add_a_model_with_its_memory_profile():
    memory = {
        "resident": 1, "offload_floor": 1, "denoise_per_mvoxel": 0, "decode_tiled": 1,
        "decode_untiled_per_mpixel": 1, "taylorseer_per_mvoxel": 0,
    }
    specs = catalogue(
        {"my-cogvideox": {"description": "fine-tuned", "pipeline_class": "CogVideoXPipeline", "source": "/m/x", "memory": memory}}
    )

    assert get_spec("my-cogvideox", specs).source == "/m/x"
    assert specs["my-cogvideox"].memory.resident == 1


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"cogvideox-2b": {"weights": "/x"}}, "unknown fields"),
        ({"cogvideox-2b": "nope"}, "must map to an object"),
        (["cogvideox-2b"], "must be an object of model names"),
        ({"new-model": {"source": "/x"}}, "new-model"),
        ({"cogvideox-2b": {"memory": {"resident": 1}}}, "memory"),
        ({"cogvideox-2b": {"cache": "magic"}}, "cache must be one of"),
    ],
)
def test_bad_overrides_are_refused_with_a_clear_message(overrides, message):
    with pytest.raises(CatalogueError, match=message):
        catalogue(overrides)


def test_an_unknown_model_names_the_known_ones():
    with pytest.raises(UnknownModel, match="known models: .*tiny-random"):
        get_spec("sora")


# -- image models ----------------------------------------------------------

@pytest.mark.parametrize(
    "has_image, has_last_image, mode",
    [(False, False, TEXT_TO_VIDEO), (True, False, IMAGE_TO_VIDEO), (True, True, FIRST_LAST_FRAME)],
)
def test_the_mode_follows_from_the_frames_given(has_image, has_last_image, mode):
    assert mode_for(has_image, has_last_image) == mode


def test_a_last_frame_without_a_first_is_no_mode():
    with pytest.raises(ValueError, match="needs a first image"):
        mode_for(False, True)


def test_every_model_lists_its_modes_and_the_text_models_keep_text_only():
    assert all(spec.modes and set(spec.modes) <= set(GENERATION_MODES) for spec in BUILTIN_MODELS.values())
    for name in ("cogvideox-2b", "cogvideox-5b", "wan2.1-t2v-1.3b", "tiny-random", "tiny-random-wan"):
        assert get_spec(name).modes == (TEXT_TO_VIDEO,)
        assert get_spec(name).public()["modes"] == [TEXT_TO_VIDEO]


@pytest.mark.parametrize(
    "name, pipeline, modes",
    [
        ("wan2.1-i2v-14b-480p", "WanImageToVideoPipeline", (IMAGE_TO_VIDEO,)),
        ("wan2.1-flf2v-14b-720p", "WanImageToVideoPipeline", (FIRST_LAST_FRAME,)),
        ("wan2.2-ti2v-5b", "WanPipeline", (TEXT_TO_VIDEO, IMAGE_TO_VIDEO)),
        ("cogvideox-5b-i2v", "CogVideoXImageToVideoPipeline", (IMAGE_TO_VIDEO,)),
    ],
)
def test_the_image_models_and_their_twins_share_pipeline_and_modes(name, pipeline, modes):
    spec = get_spec(name)
    twins = [get_spec(f"{name}-random")] if f"{name}-random" in BUILTIN_MODELS else []

    assert spec.pipeline_class == pipeline and spec.modes == modes and spec.source
    for twin in twins:
        assert (twin.pipeline_class, twin.modes, twin.image_pipeline_class) == (
            pipeline, modes, spec.image_pipeline_class
        )
        assert (twin.width, twin.height, twin.num_frames, twin.fps) == (spec.width, spec.height, spec.num_frames, spec.fps)


def test_there_is_a_tiny_model_for_every_mode():
    tiny = [spec for spec in BUILTIN_MODELS.values() if spec.name.startswith("tiny-")]

    assert {mode for spec in tiny for mode in spec.modes} == set(GENERATION_MODES)


@pytest.mark.parametrize(
    "image, expected",
    [
        # Wan 2.1 at 832x480's area (399,360 pixels), multiples of 16, at most 832 a side.
        ((1920, 1080), (832, 464)),
        ((1080, 1920), (464, 832)),
        ((1000, 1000), (624, 624)),
        ((640, 480), (736, 544)),
    ],
)
def test_a_size_follows_the_images_aspect_at_the_models_default_area(image, expected):
    assert get_spec("wan2.1-t2v-1.3b").size_for_aspect(*image) == expected


def test_a_size_is_clamped_into_the_bounds_keeping_the_aspect_as_close_as_they_allow():
    spec = get_spec("wan2.1-t2v-1.3b")

    # 1:10 would be 200x1998: shrunk to the 832 maximum it is 83 wide, under the 256 minimum.
    assert spec.size_for_aspect(100, 1000) == (256, 832)
    assert spec.size_for_aspect(1000, 100) == (832, 256)
    # CogVideoX-2b: at most 720x480, so a square is 480x480 and a portrait 272x480.
    assert get_spec("cogvideox-2b").size_for_aspect(1000, 1000) == (480, 480)
    assert get_spec("cogvideox-2b").size_for_aspect(1080, 1920) == (272, 480)


def test_every_size_chosen_is_one_the_model_accepts():
    for spec in BUILTIN_MODELS.values():
        for image in ((1, 1), (4000, 3), (3, 4000), (1920, 1080), (1080, 1920), (333, 777)):
            width, height = spec.size_for_aspect(*image)
            params = GenerationParams(
                prompt="x", negative_prompt="", width=width, height=height, num_frames=spec.num_frames,
                num_inference_steps=spec.num_inference_steps, guidance_scale=spec.guidance_scale, seed=1,
                fps=spec.fps,
            )
            assert spec.param_errors(params) == {}, (spec.name, image, width, height)


def test_cogvideox_5b_i2v_takes_its_one_size_and_always_generates_49_frames():
    spec = get_spec("cogvideox-5b-i2v")
    params = GenerationParams(
        prompt="x", negative_prompt="", width=704, height=480, num_frames=20, num_inference_steps=50,
        guidance_scale=6.0, seed=1,
    )

    assert spec.bounds()["width"] == {"min": 720, "max": 720, "multiple_of": 16}
    assert spec.param_errors(params) == {"width": ["Model cogvideox-5b-i2v needs a width of 720 pixels."]}
    assert spec.size_for_aspect(1080, 1920) == (720, 480)
    assert spec.valid_frame_count(20) == spec.valid_frame_count(49) == 49


def test_modes_can_be_overridden_from_a_models_file_and_are_checked():
    specs = catalogue({"my-i2v": {"description": "d", "pipeline_class": "WanImageToVideoPipeline", "source": "/m",
                                  "modes": ["image-to-video"]}})

    assert specs["my-i2v"].modes == (IMAGE_TO_VIDEO,)
    with pytest.raises(CatalogueError, match="modes must be"):
        catalogue({"cogvideox-2b": {"modes": ["sound-to-video"]}})
    with pytest.raises(CatalogueError, match="modes must be"):
        catalogue({"cogvideox-2b": {"modes": []}})
