"""
Checkpoints through the real pipelines: the engine's own loop gives the
plain diffusers call's frames, and a run resumed from a state saved at any
step gives the uninterrupted run's frames, for every scheduler a served
model uses, in text and image modes. A state that cannot be used starts over, saying why.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from generation import pipelines
from generation.denoise import state_bytes, state_from_bytes
from generation.params import FIRST_LAST_FRAME, TEXT_TO_VIDEO
from generation.pipelines import Cancelled, GenerationParams, generate_frames, load_pipeline, pipeline_for_mode
from generation.registry import get_spec

pytestmark = pytest.mark.usefixtures("fresh_pipelines")

# (model, mode, scheduler it runs with): CogVideoX's DDIM (tiny-random) and
# DPM (tiny-random-i2v, and swapped into the text pipeline below), Wan's UniPC
# (text, image, first-last frame, Wan 2.2's expand_timesteps in both modes).
CASES = [
    ("tiny-random", TEXT_TO_VIDEO),
    ("tiny-random-i2v", "image-to-video"),
    ("tiny-random-wan", TEXT_TO_VIDEO),
    ("tiny-random-wan-i2v", "image-to-video"),
    ("tiny-random-wan-flf2v", FIRST_LAST_FRAME),
    ("tiny-random-wan-ti2v", TEXT_TO_VIDEO),
    ("tiny-random-wan-ti2v", "image-to-video"),
]
WIDTH, HEIGHT = 64, 32
STEPS = 5


def params(**overrides) -> GenerationParams:
    values = dict(
        prompt="a bird flying over the sea", negative_prompt="blurry", width=WIDTH, height=HEIGHT, num_frames=5,
        num_inference_steps=STEPS, guidance_scale=5.0, seed=11,
    )
    return GenerationParams(**{**values, **overrides})


def picture(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))


def frames_for(mode: str) -> dict:
    if mode == TEXT_TO_VIDEO:
        return {}
    given = {"image": picture(1)}
    if mode == FIRST_LAST_FRAME:
        given["last_image"] = picture(2)
    return given


def plain_diffusers_call(spec, run: GenerationParams, given: dict) -> np.ndarray:
    """What the engine did before it owned the loop: the pipeline's own __call__."""
    pipeline = pipeline_for_mode(spec, load_pipeline(spec), pipelines.mode_for("image" in given, "last_image" in given))
    with torch.inference_mode():
        output = pipeline(
            **given,
            prompt=run.prompt,
            negative_prompt=run.negative_prompt or None,
            width=run.width,
            height=run.height,
            num_frames=spec.valid_frame_count(run.num_frames),
            num_inference_steps=run.num_inference_steps,
            guidance_scale=run.guidance_scale,
            generator=torch.Generator(device="cpu").manual_seed(run.seed),
            output_type="np",
            max_sequence_length=spec.max_sequence_length,
        )
    video = np.asarray(output.frames[0])[: run.num_frames]
    return (np.clip(video, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def every_step_state(spec, run, given) -> tuple[np.ndarray, dict[int, bytes]]:
    """An uninterrupted run's frames, and the state it offered after each step."""
    saved: dict[int, bytes] = {}
    frames = generate_frames(
        spec, run, **given, checkpoint_every=0.0, on_checkpoint=lambda step, data: saved.__setitem__(step, data)
    )
    return frames, saved


def resumed(spec, run, given, data: bytes) -> tuple[np.ndarray, list]:
    outcomes = []
    frames = generate_frames(
        spec, run, **given, resume_from=data, on_resume=lambda step, reason: outcomes.append((step, reason))
    )
    return frames, outcomes


def swap_in_dpm(spec):
    from diffusers import CogVideoXDPMScheduler

    pipeline = load_pipeline(spec)
    pipeline.scheduler = CogVideoXDPMScheduler(timestep_spacing="trailing")


@pytest.mark.parametrize("name,mode", CASES)
def test_the_engines_loop_gives_the_plain_diffusers_calls_frames(name, mode):
    spec = get_spec(name)
    given = frames_for(mode)

    assert np.array_equal(generate_frames(spec, params(), **given), plain_diffusers_call(spec, params(), given))


@pytest.mark.parametrize("name,mode", CASES)
def test_a_run_resumed_from_any_step_gives_the_uninterrupted_runs_frames(name, mode):
    spec = get_spec(name)
    given = frames_for(mode)
    frames, saved = every_step_state(spec, params(), given)

    assert sorted(saved) == list(range(1, STEPS))
    for step, data in saved.items():
        again, outcomes = resumed(spec, params(), given, data)
        assert outcomes == [(step, None)]
        assert np.array_equal(again, frames), f"resumed from step {step}"


def test_cogvideox_with_its_dpm_scheduler_resumes_exactly_and_matches_diffusers():
    # The DPM path keeps old_pred_original_sample between steps and draws noise from the generator.
    spec = get_spec("tiny-random")
    swap_in_dpm(spec)
    frames, saved = every_step_state(spec, params(), {})

    assert type(load_pipeline(spec).scheduler).__name__ == "CogVideoXDPMScheduler"
    assert np.array_equal(frames, plain_diffusers_call(spec, params(), {}))
    for step in (1, 2, STEPS - 1):
        again, outcomes = resumed(spec, params(), {}, saved[step])
        assert outcomes == [(step, None)]
        assert np.array_equal(again, frames)


def test_a_state_holds_the_multistep_history_and_the_generator():
    spec = get_spec("tiny-random-wan")
    _, saved = every_step_state(spec, params(), {})

    state = state_from_bytes(saved[3])

    assert state["step"] == 3
    assert state["scheduler"]["_step_index"] == 3
    assert state["scheduler"]["lower_order_nums"] >= 1
    assert sum(output is not None for output in state["scheduler"]["model_outputs"]) >= 1
    assert isinstance(state["generator"], torch.Tensor)
    assert state["latents"].device.type == "cpu"


def test_a_stop_offers_the_state_after_the_step_it_stopped_at():
    spec = get_spec("tiny-random-i2v")
    given = frames_for("image-to-video")
    frames, _ = every_step_state(spec, params(), given)

    with pytest.raises(Cancelled) as stopped:
        generate_frames(spec, params(), **given, on_step=lambda step, total: step < 2)
    again, outcomes = resumed(spec, params(), given, stopped.value.checkpoint())

    assert stopped.value.step == 2
    assert outcomes == [(2, None)]
    assert np.array_equal(again, frames)


def test_progress_on_a_resumed_run_starts_after_the_saved_step():
    spec = get_spec("tiny-random")
    _, saved = every_step_state(spec, params(), {})
    steps = []

    generate_frames(spec, params(), resume_from=saved[3], on_step=lambda step, total: steps.append((step, total)))

    assert steps == [(4, STEPS), (5, STEPS)]


def test_checkpoints_come_at_most_once_per_interval():
    spec = get_spec("tiny-random")
    saved = []

    generate_frames(spec, params(), checkpoint_every=3600.0, on_checkpoint=lambda step, data: saved.append(step))

    assert saved == []


def retouched(data: bytes, change) -> bytes:
    state = state_from_bytes(data)
    change(state)
    return state_bytes(state)


def other_diffusers(state):
    state["identity"]["versions"]["diffusers"] = "0.1.0"


def other_revision(state):
    state["identity"]["model"]["revision"] = "0123456789abcdef"


def other_device(state):
    state["identity"]["device_type"] = "cuda"


@pytest.mark.parametrize(
    "data,reason",
    [
        (lambda good: b"", "unreadable"),
        (lambda good: good[: len(good) // 2], "unreadable"),
        (lambda good: b"not a checkpoint at all" * 10, "unreadable"),
        (lambda good: retouched(good, other_diffusers), "made with diffusers 0.1.0"),
        (lambda good: retouched(good, other_revision), "model revision '0123456789abcdef'"),
        (lambda good: retouched(good, other_device), "made on a cuda device"),
        (lambda good: retouched(good, lambda state: state.update(step=STEPS + 3)), "outside 1..5"),
        (lambda good: retouched(good, lambda state: state.update(format=0)), "checkpoint format 0"),
        (lambda good: retouched(good, lambda state: state.update(latents=torch.zeros(1, 2, 3))), "restored"),
    ],
    ids=["empty", "truncated", "garbage", "diffusers", "revision", "device", "step", "format", "shape"],
)
def test_an_unusable_checkpoint_starts_over_and_says_why(data, reason):
    spec = get_spec("tiny-random")
    frames, saved = every_step_state(spec, params(), {})

    again, outcomes = resumed(spec, params(), {}, data(saved[2]))

    assert np.array_equal(again, frames)
    [(step, why)] = outcomes
    assert step == 0
    assert reason in why


def test_a_checkpoint_of_other_parameters_starts_over():
    spec = get_spec("tiny-random-wan")
    _, saved = every_step_state(spec, params(seed=12), {})
    frames = generate_frames(spec, params())

    again, outcomes = resumed(spec, params(), {}, saved[2])

    assert outcomes == [(0, "made for other parameters or input images")]
    assert np.array_equal(again, frames)


def test_a_checkpoint_of_another_image_starts_over():
    spec = get_spec("tiny-random-wan-i2v")
    _, saved = every_step_state(spec, params(), {"image": picture(7)})

    _, outcomes = resumed(spec, params(), {"image": picture(8)}, saved[2])

    assert outcomes == [(0, "made for other parameters or input images")]


def test_a_checkpoint_is_small_beside_the_model():
    spec = get_spec("tiny-random-wan")
    _, saved = every_step_state(spec, params(), {})

    assert all(len(data) < 1024 * 1024 for data in saved.values())
