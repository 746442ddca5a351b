"""The model catalogue: plain data, no settings (the deployment's policy is tests/jobs/test_deployment.py)."""

import pytest

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
