"""
Service overhead against bare diffusers, on the same pipeline and parameters.

    .venv/bin/python bench/generation.py                 # tiny-random on this machine
    .venv/bin/python bench/generation.py --jobs 9 --steps 30 --frames 24
    .venv/bin/python bench/generation.py --full-size     # CogVideoX-2b's architecture, random weights (GPU)

Bare: the diffusers pipeline called directly, then the frames written to an
MP4 with the service's own encoder settings, N times in this process. Service: the same jobs
submitted over HTTP to a real server (runserver) and run by a real django-q2
worker (qcluster), with progress writes, encoding, poster, preview and
storage, one job at a time. Both use the same torch thread count. Figures are
medians over the warm runs, from the jobs' own timestamps (submitted, started,
completed); the service's first job, which builds the model, is reported on
its own line.

Prints seconds per job, frames per second, peak RSS and the ratio
service/bare. Uses a throwaway data directory (SQLite and media), or the
database in DATABASE_URL if set.
"""

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.processes import descendants  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5, help="jobs per path (default 5)")
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--width", type=int, default=240)
    parser.add_argument("--height", type=int, default=160)
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--port", type=int, default=8177)
    parser.add_argument(
        "--full-size",
        action="store_true",
        help="cogvideox-2b-random at 720x480, 49 frames, 50 steps: the real model's cost (needs a GPU, ~20 GB)",
    )
    return parser.parse_args()


PROMPT = "a cat running over the mountains at sunset"


def request_json(url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "videogen.settings")
    import django

    django.setup()


def bare_job(pipeline, spec, args, index: int, workdir: Path) -> float:
    """The pipeline called directly, then the same MP4 encoder the service uses."""
    import numpy as np
    import torch

    from generation.encoding import encode_mp4

    started = time.perf_counter()
    with torch.inference_mode():
        output = pipeline(
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
    encode_mp4(frames, workdir / f"{index}.mp4", fps=args.fps)
    return time.perf_counter() - started


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
    job = wait_for(lambda: finished(request_json(url)), 3600, "a job", interval=0.5)
    if job["status"] != "completed":
        raise SystemExit(f"job failed: {job['error_message']}")
    return job


def start_service(args, threads: int, data_dir: Path) -> tuple[list[subprocess.Popen], str]:
    env = {
        **os.environ,
        "VIDEOGEN_DATA_DIR": str(data_dir),
        "VIDEOGEN_WORKERS": "1",
        "VIDEOGEN_TORCH_THREADS": str(threads),
        "VIDEOGEN_MODELS": args.model,
        "VIDEOGEN_DEFAULT_MODEL": args.model,
    }
    python = sys.executable
    subprocess.run([python, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    log = open(data_dir / "service.log", "w")
    server = subprocess.Popen(
        [python, "manage.py", "runserver", "--noreload", f"127.0.0.1:{args.port}"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    cluster = subprocess.Popen([python, "manage.py", "qcluster"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{args.port}/api/v1"
    wait_for(lambda: request_json(f"{base}/health")["status"] == "healthy", 60, "the server")
    return [server, cluster], base


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def finished(job: dict) -> dict | None:
    return job if job["status"] in ("completed", "failed", "cancelled") else None


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def wait_for(check, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        time.sleep(interval)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> None:
    args = parse_args()
    if args.full_size:
        # CogVideoX-2b's architecture with random weights, at its real size.
        args.model, args.width, args.height, args.frames, args.steps = "cogvideox-2b-random", 720, 480, 49, 50
    threads = max(1, os.cpu_count() or 1)
    print(f"model {args.model}: {args.frames} frames {args.width}x{args.height}, {args.steps} steps, "
          f"{args.jobs} jobs per path, {threads} torch threads")

    setup_django()
    import torch

    from generation.pipelines import load_pipeline, resolve_device
    from jobs.deployment import model_spec

    torch.set_num_threads(threads)
    spec = model_spec(args.model)
    data_dir = Path(tempfile.mkdtemp(prefix="videogen-bench-"))
    processes, base = start_service(args, threads, data_dir)
    try:
        pipeline = load_pipeline(spec)
        # Alternate the two paths job by job, so a noisy neighbour slows both
        # alike. Round 0 is the warm-up: the worker builds its model there.
        bare, service = [], []
        for index in range(args.jobs + 1):
            service.append(service_job(base, args, index))
            bare.append(bare_job(pipeline, spec, args, index, data_dir))
        worker_rss = max(peak_rss_mib(pid) for pid in descendants(processes[1].pid))
    finally:
        stop(processes)
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
