"""GPU memory admission from the measured tables: plans, the engine's use of them, the API's refusal."""

import dataclasses
import json
from pathlib import Path

import pytest

from generation import pipelines
from generation.pipelines import GenerationParams, LoadOptions, OutOfMemory, generate_frames, load_pipeline
from generation.registry import MemoryProfile, get_spec

COGVIDEOX = get_spec("cogvideox-2b")
WAN = get_spec("wan2.1-t2v-1.3b")
MEASURED = Path(__file__).resolve().parents[2] / "bench" / "gpu-runs" / "h200-options.jsonl"


def measured_points():
    rows = [json.loads(line) for line in MEASURED.read_text().splitlines()]
    return [row for row in rows if row["section"] == "memory"]


@pytest.mark.parametrize("point", measured_points(), ids=lambda p: f"{p['model']}-{p['width']}x{p['height']}x{p['frames']}")
def test_the_profiles_predict_every_measured_peak_within_a_few_percent(point):
    spec = COGVIDEOX if point["model"].startswith("cogvideox") else WAN
    for tiled in (True, False):
        measured = point.get(f"decode_{'tiled' if tiled else 'untiled'}_peak_gib")
        if measured is None:
            continue
        predicted = spec.memory.peak_gib(point["frames"], point["width"], point["height"], tiled=tiled, offload=False)
        assert predicted == pytest.approx(max(measured, point["denoise_peak_gib"]), rel=0.04)


@pytest.mark.parametrize(
    "spec, size, gpu, tiling, offload",
    [
        (COGVIDEOX, (49, 720, 480), 80, False, False),  # 29 GiB untiled fits: the faster decode
        (COGVIDEOX, (49, 720, 480), 24, True, False),  # 18 GiB tiled
        (COGVIDEOX, (49, 720, 480), 16, True, True),  # only with the text encoder off the GPU while idle
        (WAN, (81, 832, 480), 24, True, False),  # 22.5 GiB untiled plus margin does not fit 24
        (WAN, (81, 832, 480), 48, False, False),
    ],
)
def test_a_plan_takes_the_fastest_options_that_fit(spec, size, gpu, tiling, offload):
    plan = spec.memory_plan(*size, gpu_memory_gib=gpu)

    assert plan.fits
    assert (plan.vae_tiling, plan.cpu_offload) == (tiling, offload)
    assert plan.peak_gib <= gpu - 1


def test_a_job_no_card_of_that_size_can_hold_gets_the_leanest_plan_marked_as_not_fitting():
    plan = COGVIDEOX.memory_plan(49, 720, 480, gpu_memory_gib=8)

    assert not plan.fits
    assert plan.vae_tiling and plan.cpu_offload
    assert plan.peak_gib > 7


def test_a_spec_that_forces_tiling_keeps_it_and_taylorseer_needs_more_memory():
    tiled = dataclasses.replace(COGVIDEOX, enable_vae_tiling=True)
    cached = dataclasses.replace(COGVIDEOX, cache="taylorseer_cache")

    assert tiled.memory_plan(49, 720, 480, gpu_memory_gib=80).vae_tiling
    assert cached.memory_plan(49, 720, 480, gpu_memory_gib=80).peak_gib > 44
    assert cached.memory_plan(49, 720, 480, gpu_memory_gib=40).vae_tiling


def test_a_spec_without_measurements_is_never_refused():
    assert get_spec("tiny-random").memory_plan(200, 512, 512, gpu_memory_gib=1) is None


# --- the engine, on the CPU with a made-up table for the tiny model ---------------

TINY = dataclasses.replace(
    get_spec("tiny-random"),
    name="tiny-measured",
    memory=MemoryProfile(
        resident=1.0, offload_floor=0.5, denoise_per_mvoxel=1.0, decode_tiled=0.5,
        decode_untiled_per_mpixel=500.0, taylorseer_per_mvoxel=0.0,
    ),
)
PARAMS = GenerationParams("a cat", "", 64, 64, 9, 2, 5.0, 1)  # untiled decode: 1 + 2.05 GiB, tiled: 1.5


pytestmark = pytest.mark.usefixtures("fresh_pipelines")


def test_the_engine_refuses_a_job_that_cannot_fit_before_running_a_step():
    steps = []

    with pytest.raises(OutOfMemory, match=r"not started: 9 frames at 64x64 .* this GPU has 1\.5 GiB"):
        generate_frames(TINY, PARAMS, options=LoadOptions(gpu_memory_gib=1.5), on_step=lambda *a: steps.append(a))

    assert steps == []


def test_the_engine_tiles_the_vae_for_a_job_only_when_untiled_would_not_fit():
    tiling_seen = []
    pipeline = load_pipeline(TINY)

    def watch(step, total):
        tiling_seen.append(pipeline.vae.use_tiling)

    generate_frames(TINY, PARAMS, options=LoadOptions(gpu_memory_gib=3.0), on_step=watch)
    generate_frames(TINY, PARAMS, options=LoadOptions(gpu_memory_gib=8.0), on_step=watch)

    assert tiling_seen == [True, True, False, False]
    assert not pipeline.vae.use_tiling  # back as the spec loads it


# --- the API -----------------------------------------------------------------------


@pytest.fixture
def serving_cogvideox(settings):
    settings.VIDEOGEN_MODELS = ["tiny-random", "cogvideox-2b"]
    return settings


@pytest.mark.django_db
def test_submit_refuses_a_size_no_gpu_of_the_configured_memory_can_hold(api, serving_cogvideox):
    serving_cogvideox.VIDEOGEN_GPU_MEMORY_GB = 8
    body = {"user_id": "alice", "prompt": "a cat", "model": "cogvideox-2b", "num_frames": 49}

    response = api.post("/api/v1/generate", body, format="json")

    assert response.status_code == 400
    message = response.json()["errors"]["num_frames"][0]
    assert "49 frames at 720x480" in message and "8 GiB (VIDEOGEN_GPU_MEMORY_GB)" in message


@pytest.mark.django_db
def test_submit_accepts_what_tiling_makes_fit_and_anything_when_no_limit_is_set(api, serving_cogvideox):
    body = {"user_id": "alice", "prompt": "a cat", "model": "cogvideox-2b", "num_frames": 49}

    serving_cogvideox.VIDEOGEN_GPU_MEMORY_GB = 24
    assert api.post("/api/v1/generate", body, format="json").status_code == 202
    serving_cogvideox.VIDEOGEN_GPU_MEMORY_GB = None
    assert api.post("/api/v1/generate", body, format="json").status_code == 202
