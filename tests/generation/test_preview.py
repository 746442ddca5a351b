"""Live previews: the latents of real (tiny) runs projected to a small JPEG, without the VAE."""

import io
import os
import threading

import numpy as np
import pytest
import torch
from django.core.files.storage import default_storage
from PIL import Image

from generation.pipelines import GenerationParams, generate_frames
from generation.preview import MAX_SIDE, LatentPreview
from generation.registry import get_spec
from generation.runner import LivePreviewWriter
from jobs.services.files import live_preview_name

pytestmark = pytest.mark.usefixtures("fresh_pipelines")

PARAMS = GenerationParams(
    prompt="a cat running over the mountains at sunset", negative_prompt="", width=64, height=48,
    num_frames=9, num_inference_steps=3, guidance_scale=4.5, seed=7,
)


@pytest.mark.parametrize("name", ["tiny-random", "tiny-random-wan"])
def test_on_latents_gets_every_steps_latents_and_they_make_a_small_jpeg(name):
    spec = get_spec(name)
    seen = []

    def on_latents(step, latents):
        seen.append((step, LatentPreview(spec.pipeline_class).jpeg(latents)))

    generate_frames(spec, PARAMS, on_latents=on_latents)

    assert [step for step, _ in seen] == [1, 2, 3]
    image = Image.open(io.BytesIO(seen[-1][1]))
    assert image.format == "JPEG" and max(image.size) == MAX_SIDE
    # The video's 4:3 shape, not a square of noise: the layout was read the right way round.
    assert image.size == (MAX_SIDE, MAX_SIDE * 3 // 4)
    pixels = np.asarray(image)
    assert pixels.std() > 5, "a picture, not one flat colour"


def test_the_wan_map_is_the_published_linear_map():
    import torch

    from generation.preview import WAN21_RGB_BIAS, WAN21_RGB_FACTORS

    latents = torch.zeros(1, 16, 3, 2, 2)  # Wan: (batch, channels, frames, h, w)
    latents[0, 2] = 1.0  # one channel lit: its row of factors, plus the bias
    frame = LatentPreview("WanPipeline").frame(latents)
    expected = [round(((f + b + 1) / 2) * 255) for f, b in zip(WAN21_RGB_FACTORS[2], WAN21_RGB_BIAS)]
    assert frame.shape == (2, 2, 3)
    assert frame[0, 0].tolist() == expected


def test_a_reader_never_finds_the_live_preview_missing_while_it_is_redrawn(make_job, media_root):
    job = make_job(status="running")
    writer = LivePreviewWriter(job, get_spec("tiny-random").pipeline_class, every=1)
    latents = torch.randn(1, 3, 16, 8, 8)
    writer(1, latents)
    done = threading.Event()
    misses = []

    def read_until_done():
        while not done.is_set():
            try:
                with default_storage.open(live_preview_name(job.id), "rb") as handle:
                    assert handle.read(2) == b"\xff\xd8"
            except FileNotFoundError:
                misses.append(1)

    reader = threading.Thread(target=read_until_done)
    reader.start()
    try:
        for step in range(2, 300):
            writer(step, latents)
    finally:
        done.set()
        reader.join()

    assert not misses, f"the preview was missing on {len(misses)} reads"
    assert os.listdir(media_root / "live") == [f"{job.id}.jpg"], "one file, no temporary left behind"
