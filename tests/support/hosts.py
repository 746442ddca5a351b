"""
Several hosts on one machine, for tests/test_hosts.py and bench/hosts.py:
"host A" serves the API (gunicorn), hosts B and C run one qcluster worker
each. Every host has its own working directory, data dir and media root
(nothing on disk is shared) and its own VIDEOGEN_WORKER_HOST; they share
only what a real fleet shares: PostgreSQL, Redis and an S3 bucket.
"""

import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.support.processes import free_port, wait_until

BASE_DIR = Path(__file__).resolve().parents[2]
START_TIMEOUT = 120
# Settings a host must not inherit from whoever started it: each host gets
# its own, or the fleet's shared ones, explicitly.
_PRIVATE_PREFIXES = ("VIDEOGEN_", "AWS_")
_PRIVATE_NAMES = {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}
# The reaper on a surviving host judges a worker on another host by its
# heartbeat alone: these make "lost" mean ten silent seconds instead of sixty,
# and the reaper look every two seconds instead of thirty.
FAST_RECOVERY = {
    "VIDEOGEN_HEARTBEAT_INTERVAL": "1",
    "VIDEOGEN_HEARTBEAT_TIMEOUT": "10",
    "VIDEOGEN_REAPER_INTERVAL": "2",
}
# Several seconds of denoising on the tiny model: long enough to lose or stop its host mid-way.
LONG_JOB = {"width": 128, "height": 128, "num_frames": 17, "num_inference_steps": 150, "fps": 8}
COMPLETED_LINE = re.compile(r"job=([0-9a-f-]{36}) user_id=\S+ completed in")


class Host:
    """One machine of the fleet: a directory of its own and the environment its processes see."""

    def __init__(self, name: str, root: Path, shared_env: dict[str, str], **extra_env: str):
        self.name = name
        self.root = root
        self.data_dir = root / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = root / f"{name}.log"
        self.env = {
            **{key: value for key, value in os.environ.items()
               if not key.startswith(_PRIVATE_PREFIXES) and key not in _PRIVATE_NAMES},
            **shared_env,
            "VIDEOGEN_WORKER_HOST": name,
            "VIDEOGEN_DATA_DIR": str(self.data_dir),
            "VIDEOGEN_MEDIA_ROOT": str(self.data_dir / "media"),
            **extra_env,
        }
        self.processes: list[subprocess.Popen] = []

    def spawn(self, *command: str) -> subprocess.Popen:
        """A process of this host, in its own directory and its own session (so killpg takes all of it)."""
        with open(self.log_path, "a") as log:
            process = subprocess.Popen(
                command, cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.processes.append(process)
        return process

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def files(self) -> list[str]:
        """Every file under this host's data dir except static files: media here would mean S3 was bypassed."""
        return sorted(
            str(path.relative_to(self.data_dir)) for path in self.data_dir.rglob("*")
            if path.is_file() and "static" not in path.relative_to(self.data_dir).parts[:1]
        )

    def lose(self) -> None:
        """The host is lost: every process it runs is SIGKILLed at once, nothing runs its cleanup."""
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def stop(self, timeout: float = 60) -> None:
        """A clean stop (SIGTERM to each process's parent, as docker does); SIGKILL past the timeout."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
            # Whatever a stopped or killed parent left behind.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class ApiHost(Host):
    """Host A: the API on gunicorn, as `make run` and docker/ serve it."""

    def start(self) -> "ApiHost":
        self.port = free_port()
        subprocess.run([sys.executable, str(BASE_DIR / "manage.py"), "collectstatic", "--noinput", "-v", "0"],
                       cwd=self.root, env=self.env, check=True)
        self.spawn(
            sys.executable, "-m", "gunicorn", "videogen.wsgi:application",
            "--pythonpath", str(BASE_DIR), "--bind", f"127.0.0.1:{self.port}",
            "--workers", "1", "--threads", "4", "--logger-class", "videogen.gunicorn.Logger",
        )

        def answers_health() -> bool:
            with contextlib.suppress(OSError):
                return self.request("GET", "/api/v1/health")[0] == 200
            return False

        wait_until(answers_health, f"host {self.name}'s API to start", timeout=START_TIMEOUT,
                   gone=lambda: self.processes[0].poll() is not None, details=lambda: self.log[-4000:])
        return self

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            data = json.dumps(body).encode() if body is not None else None
            connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def submit(self, **fields) -> str:
        status, _headers, body = self.request("POST", "/api/v1/generate", fields)
        if status != 202:
            raise AssertionError(f"submit answered {status}: {body[:500]!r}")
        return json.loads(body)["job_id"]

    def job(self, job_id: str, user_id: str) -> dict:
        status, _headers, body = self.request("GET", f"/api/v1/job/{job_id}?user_id={user_id}")
        if status != 200:
            raise AssertionError(f"job {job_id} answered {status}: {body[:500]!r}")
        return json.loads(body)


class WorkerHost(Host):
    """Host B or C: one qcluster with one worker process on the CPU."""

    def start(self) -> "WorkerHost":
        self.cluster = self.spawn(sys.executable, str(BASE_DIR / "manage.py"), "qcluster")
        return self


def worker_env(**extra: str) -> dict[str, str]:
    return {
        "VIDEOGEN_DEVICES": "cpu",
        "VIDEOGEN_WORKERS": "1",
        "VIDEOGEN_TORCH_THREADS": "1",
        "VIDEOGEN_QUEUE_POLL": "0.05",
        "VIDEOGEN_PROGRESS_INTERVAL": "0.05",
        **FAST_RECOVERY,
        **extra,
    }


def completions(*hosts: Host) -> Counter:
    """How many times each job was completed, over every host's log: more than 1 is a job run twice."""
    return Counter(job for host in hosts for job in COMPLETED_LINE.findall(host.log))


def expected_objects(job_ids) -> list[str]:
    """The bucket's keys when each job ran exactly once: its video, poster and preview, no more."""
    return sorted(
        key for job_id in job_ids
        for key in (f"videos/{job_id}.mp4", f"posters/{job_id}.jpg", f"previews/{job_id}.webp")
    )
