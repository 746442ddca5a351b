"""
Service overhead against bare diffusers, on the same pipeline and parameters.

    .venv/bin/python -m bench.generation                 # tiny-random on this machine
    .venv/bin/python -m bench.generation --jobs 9 --steps 30 --frames 24
    .venv/bin/python -m bench.generation --full-size     # CogVideoX-2b's architecture, random weights (GPU)
    .venv/bin/python -m bench.generation --engine-image  # image to video: the engine against bare diffusers

Bare: the diffusers pipeline called directly, then the frames written to an
MP4 with the service's own encoder settings, N times in this process.
Service: the same jobs submitted over HTTP to gunicorn as `make run` starts
it and run by a real django-q2 worker (qcluster), with progress writes,
encoding, poster, preview and storage, one job at a time. Both use the same torch thread count. Figures are
medians over the warm runs, from the jobs' own timestamps (submitted, started,
completed); the service's first job, which builds the model, is reported on
its own line.

With --engine-image, no service: in one process, an image to
video job of --model (default tiny-random-i2v) through the engine, from the
uploaded file's bytes (generation.images.prepare_image, then
generate_frames, then the MP4), against bare diffusers on the same pipeline
object (Pillow's open, convert and resize, the pipeline call, the MP4),
alternating job by job.

Prints seconds per job, frames per second, peak RSS and the ratio
service/bare. Uses a throwaway data directory (SQLite and media), or the
database in DATABASE_URL if set.
"""

import argparse
import contextlib
import os
import resource
import shutil
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench.common import FINISHED, gunicorn, migrate, request_json, setup_django, start_qcluster, stop_process
from tests.support.processes import descendants, wait_until


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5, help="jobs per path (default 5)")
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--width", type=int, default=240)
    parser.add_argument("--height", type=int, default=160)
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument(
        "--engine-image",
        action="store_true",
        help="image to video through generate_frames against the bare pipeline call, in this process",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads for --engine-image (default: every CPU)")
    parser.add_argument("--image-size", default="1920x1080", help="the uploaded image's size (default 1920x1080)")
    parser.add_argument(
        "--full-size",
        action="store_true",
        help="cogvideox-2b-random at 720x480, 49 frames, 50 steps: the real model's cost (needs a GPU, ~20 GB)",
    )
    return parser.parse_args()


PROMPT = "a cat running over the mountains at sunset"


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def bare_job(pipeline, spec, args, index: int, workdir: Path) -> float:
    """The pipeline called directly, then the same MP4 encoder the service uses."""
    started = time.perf_counter()
    bare_call(pipeline, spec, args, index, workdir / f"{index}.mp4")
    return time.perf_counter() - started


def bare_call(pipeline, spec, args, index: int, path: Path, **inputs) -> None:
    """What a caller of diffusers must do at least: the pipeline call (with inputs: an image), the frames to MP4."""
    import numpy as np
    import torch

    from generation.encoding import encode_mp4

    with torch.inference_mode():
        output = pipeline(
            **inputs,
            prompt=PROMPT,
            width=args.width,
            height=args.height,
            num_frames=spec.valid_frame_count(args.frames),
            num_inference_steps=args.steps,
            guidance_scale=4.5,
            generator=torch.Generator().manual_seed(index),
            output_type="np",
            max_sequence_length=spec.max_sequence_length,
        )
    frames = (np.clip(output.frames[0][: args.frames], 0, 1) * 255).round().astype(np.uint8)
    encode_mp4(frames, path, fps=args.fps)


def service_job(base: str, args, index: int) -> dict:
    """One job through the API and the worker; returns the finished job."""
    job = request_json(
        f"{base}/generate",
        {
            "user_id": "bench", "prompt": PROMPT, "model": args.model, "width": args.width, "height": args.height,
            "num_frames": args.frames, "num_inference_steps": args.steps, "fps": args.fps, "guidance_scale": 4.5,
            "seed": index,
        },
    )
    url = f"{base}/job/{job['job_id']}"
    # Polling costs the server CPU that the worker would use: not too often.
    job = wait_until(lambda: finished(request_json(url)), "a job", timeout=3600, interval=0.5)
    if job["status"] != "completed":
        raise SystemExit(f"job failed: {job['error_message']}")
    return job


@contextlib.contextmanager
def running_service(threads: int, data_dir: Path):
    """gunicorn and a one-worker qcluster on the throwaway data directory; yields (the cluster, the API's base URL)."""
    env = {"VIDEOGEN_WORKERS": "1", "VIDEOGEN_TORCH_THREADS": str(threads)}
    migrate()
    with open(data_dir / "service.log", "a") as log, gunicorn(env, data_dir / "gunicorn.log") as (port, _group):
        cluster = start_qcluster(log, env)
        try:
            yield cluster, f"http://127.0.0.1:{port}/api/v1"
        finally:
            stop_process(cluster, timeout=30)


def finished(job: dict) -> dict | None:
    return job if job["status"] in FINISHED else None


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def photo_jpeg(size: str) -> bytes:
    """A JPEG of the given size with smooth gradients and some noise: a photo's decode cost, not noise's."""
    import io

    import numpy as np
    from PIL import Image

    width, height = (int(side) for side in size.split("x"))
    x = np.linspace(0, 255, width)[None, :, None]
    y = np.linspace(0, 255, height)[:, None, None]
    pixels = np.concatenate([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2)
    pixels += np.random.default_rng(0).normal(0, 8, pixels.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def engine_image_job(spec, args, data: bytes, index: int, workdir: Path) -> tuple[float, float, float]:
    """The engine's path from upload bytes to MP4; returns (wall, CPU, preprocessing wall) seconds."""
    from generation.encoding import encode_mp4
    from generation.images import prepare_image
    from generation.pipelines import GenerationParams, generate_frames

    started, cpu = time.perf_counter(), time.process_time()
    image = prepare_image(data, args.width, args.height, "crop")
    prepared = time.perf_counter()
    params = GenerationParams(
        prompt=PROMPT, negative_prompt="", width=args.width, height=args.height, num_frames=args.frames,
        num_inference_steps=args.steps, guidance_scale=4.5, seed=index,
    )
    frames = generate_frames(spec, params, image=image)
    encode_mp4(frames, workdir / f"engine-{index}.mp4", fps=args.fps)
    return time.perf_counter() - started, time.process_time() - cpu, prepared - started


def bare_image_job(pipeline, spec, args, data: bytes, index: int, workdir: Path) -> tuple[float, float]:
    """What a caller of diffusers must do at least: open the image, make it RGB at the size, call, encode."""
    import io

    from PIL import Image

    started, cpu = time.perf_counter(), time.process_time()
    image = Image.open(io.BytesIO(data)).convert("RGB").resize((args.width, args.height))
    bare_call(pipeline, spec, args, index, workdir / f"bare-{index}.mp4", image=image)
    return time.perf_counter() - started, time.process_time() - cpu


def engine_image_main(args, threads: int) -> None:
    """--engine-image: the engine against bare diffusers on the same pipeline object, in this process."""
    import torch

    from generation.pipelines import load_pipeline, resolve_device
    from generation.registry import get_spec

    torch.set_num_threads(threads)
    spec = get_spec(args.model)
    data = photo_jpeg(args.image_size)
    workdir = Path(tempfile.mkdtemp(prefix="videogen-bench-"))
    try:
        pipeline = load_pipeline(spec)
        engine, engine_cpu, preprocessing, bare, bare_cpu = [], [], [], [], []
        # Round 0 warms both paths up; then they alternate, so a noisy
        # neighbour slows both alike, and which goes first alternates too.
        for index in range(args.jobs + 1):
            for path in ("engine", "bare") if index % 2 == 0 else ("bare", "engine"):
                if path == "engine":
                    wall, cpu, prepared = engine_image_job(spec, args, data, index, workdir)
                    engine.append(wall)
                    engine_cpu.append(cpu)
                    preprocessing.append(prepared)
                else:
                    wall, cpu = bare_image_job(pipeline, spec, args, data, index, workdir)
                    bare.append(wall)
                    bare_cpu.append(cpu)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    engine_median, bare_median = statistics.median(engine[1:]), statistics.median(bare[1:])
    # CPU seconds (all of the process's threads) move less than wall time when other work shares the cores.
    engine_cpu_median, bare_cpu_median = statistics.median(engine_cpu[1:]), statistics.median(bare_cpu[1:])
    print(f"device: {resolve_device()}; image {args.image_size} JPEG, {len(data) / 1024:.0f} KiB")
    print(f"{'path':<40}{'s/job':>9}{'frames/s':>10}{'CPU s/job':>11}")
    print(f"{'bare diffusers (PIL resize) + encode':<40}{bare_median:>9.3f}{args.frames / bare_median:>10.2f}"
          f"{bare_cpu_median:>11.3f}")
    print(f"{'engine: prepare_image + generate_frames':<40}{engine_median:>9.3f}{args.frames / engine_median:>10.2f}"
          f"{engine_cpu_median:>11.3f}")
    print(f"engine preprocessing (decode, RGB, crop fit): median {statistics.median(preprocessing[1:]) * 1000:.1f} ms")
    print(f"per job: engine {' '.join(f'{t:.3f}' for t in engine[1:])}; bare {' '.join(f'{t:.3f}' for t in bare[1:])}")
    print(f"ratio engine/bare, CPU seconds: {engine_cpu_median / bare_cpu_median:.3f}")
    paired = statistics.median(e / b for e, b in zip(engine[1:], bare[1:]))
    print(f"ratio engine/bare: {engine_median / bare_median:.3f} of the medians, {paired:.3f} the median of "
          "job-by-job ratios (goal <= 1.05)")


def main() -> None:
    args = parse_args()
    if args.engine_image:
        if args.model == "tiny-random":
            args.model = "tiny-random-i2v"
        threads = args.threads or max(1, os.cpu_count() or 1)
        print(f"model {args.model}: {args.frames} frames {args.width}x{args.height}, {args.steps} steps, "
              f"{args.jobs} jobs per path, {threads} torch threads")
        engine_image_main(args, threads)
        return
    if args.full_size:
        # CogVideoX-2b's architecture with random weights, at its real size.
        args.model, args.width, args.height, args.frames, args.steps = "cogvideox-2b-random", 720, 480, 49, 50
    threads = max(1, os.cpu_count() or 1)
    print(f"model {args.model}: {args.frames} frames {args.width}x{args.height}, {args.steps} steps, "
          f"{args.jobs} jobs per path, {threads} torch threads")

    data_dir = setup_django(VIDEOGEN_MODELS=args.model, VIDEOGEN_DEFAULT_MODEL=args.model)
    import torch

    from generation.pipelines import load_pipeline, resolve_device
    from jobs.scheduling.deployment import model_spec

    torch.set_num_threads(threads)
    spec = model_spec(args.model)
    try:
        with running_service(threads, data_dir) as (cluster, base):
            pipeline = load_pipeline(spec)
            # Alternate the two paths job by job, so a noisy neighbour slows both
            # alike. Round 0 is the warm-up: the worker builds its model there.
            bare, service = [], []
            for index in range(args.jobs + 1):
                service.append(service_job(base, args, index))
                bare.append(bare_job(pipeline, spec, args, index, data_dir))
            worker_rss = max(peak_rss_mib(pid) for pid in descendants(cluster.pid))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    bare_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    bare_median = statistics.median(bare[1:])
    # From the job's own timestamps: the client's polling adds its interval.
    total_median = statistics.median(seconds_between(job["submitted_at"], job["completed_at"]) for job in service[1:])
    run_median = statistics.median(seconds_between(job["started_at"], job["completed_at"]) for job in service[1:])
    queued_median = statistics.median(seconds_between(job["submitted_at"], job["started_at"]) for job in service[1:])
    print(f"device: {resolve_device()}")
    print(f"{'path':<34}{'s/job':>9}{'frames/s':>10}{'peak RSS MiB':>14}")
    print(f"{'bare diffusers + encode':<34}{bare_median:>9.3f}{args.frames / bare_median:>10.2f}{bare_rss:>14.0f}")
    print(f"{'service, submit to completed':<34}{total_median:>9.3f}{args.frames / total_median:>10.2f}"
          f"{worker_rss:>14.0f}")
    print(f"{'service, worker claim to done':<34}{run_median:>9.3f}{args.frames / run_median:>10.2f}")
    first = seconds_between(service[0]["submitted_at"], service[0]["completed_at"])
    print(f"service first job (builds the model): {first:.3f} s; warm median {total_median:.3f} s")
    print(f"median wait in queue: {queued_median:.3f} s")
    print(f"overhead ratio service/bare: submit-to-completed {total_median / bare_median:.3f}, "
          f"worker run {run_median / bare_median:.3f}")


if __name__ == "__main__":
    main()
