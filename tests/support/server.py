"""
`make run` as a user runs it: gunicorn and a qcluster in one process group,
on a free port, against its own SQLite database and media under a
temporary directory. For tests/test_make_run.py.
"""

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

from tests.support.processes import free_port, wait_until

START_TIMEOUT = 120


def stop_group(process: subprocess.Popen, signum: int, *, timeout: float) -> None:
    """Signal the process's group, wait up to timeout, then SIGKILL whatever of the group is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class Server:
    def __init__(self, process: subprocess.Popen, port: int, log_path: Path):
        self.process = process
        self.port = port
        self.log_path = log_path

    @property
    def log(self) -> bytes:
        return self.log_path.read_bytes()

    def request(self, method: str, path: str, body=None, headers=None, **kwargs) -> tuple[http.client.HTTPResponse, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers or {}, **kwargs)
            response = connection.getresponse()
            return response, response.read()
        finally:
            connection.close()

    def wait_until_up(self, what: str, *, healthy_only: bool = False) -> None:
        """Until /health answers (200, or 503 too unless healthy_only); fail with the log if the process exits."""
        answers = (200,) if healthy_only else (200, 503)

        def answers_health() -> bool:
            with contextlib.suppress(OSError):
                return self.request("GET", "/health")[0].status in answers
            return False

        wait_until(answers_health, f"{what} to start", timeout=START_TIMEOUT, gone=lambda: self.process.poll() is not None,
                   details=lambda: self.log[-4000:].decode(errors="replace"))

    def raw(self, data: bytes) -> bytes:
        """Send bytes as they are (no client library to refuse them) and return the answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            sock.sendall(data)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    def stop_seconds(self, signum: int = signal.SIGINT, *, limit: float = 30) -> float:
        """
        Signal the whole group, as a terminal's Ctrl-C does: the seconds until
        none of it runs (at most `limit`; what is left then is killed).
        """
        started = time.monotonic()
        os.killpg(self.process.pid, signum)
        while self.group_alive() and time.monotonic() - started < limit:
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        stop_group(self.process, signal.SIGKILL, timeout=5)
        return elapsed

    def run_tiny_job(self) -> dict:
        """Submit a tiny job over HTTP and wait for it to finish; the job as GET /job shows it then."""
        body = {"user_id": "tiny", "prompt": "a red fox", "width": 64, "height": 64, "num_frames": 9,
                "num_inference_steps": 2, "fps": 8}
        response, answer = self.request("POST", "/api/v1/generate", body=json.dumps(body),
                                        headers={"Content-Type": "application/json"})
        assert response.status == 202, answer
        job_id = json.loads(answer)["job_id"]

        def finished() -> dict | None:
            job = json.loads(self.request("GET", f"/api/v1/job/{job_id}")[1])
            return job if job["status"] not in ("pending", "running") else None

        return wait_until(finished, "the job to finish", timeout=180,
                          details=lambda: self.log[-3000:].decode(errors="replace"))

    def group_alive(self) -> bool:
        """Whether any process of make's group still runs (zombies, awaiting their parent's wait, do not count)."""
        self.process.poll()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                # After "(comm)": state, ppid, pgrp.
                state, _ppid, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
                if int(pgrp) == self.process.pid and state != "Z":
                    return True
        return False


def start_make_run(tmp_path: Path, *, extra: dict[str, str] | None = None) -> Server:
    """`make run` on a free port, started (not yet answering): stop it with stop_group()."""
    port = free_port()
    venv = Path(sys.prefix)
    env = {name: value for name, value in os.environ.items()
           if name not in ("DATABASE_URL", "REDIS_URL", "VIDEOGEN_MEDIA_ROOT", "DJANGO_SETTINGS_MODULE")}
    env |= {"VIDEOGEN_DATA_DIR": str(tmp_path / "data"), "VIDEOGEN_QUEUE_POLL": "0.05", **(extra or {})}
    log_path = tmp_path / "make-run.log"
    with open(log_path, "wb") as log:
        # -o: the virtualenv is this one, already installed; its own session,
        # so that SIGINT reaches the whole group, as Ctrl-C in a terminal does.
        process = subprocess.Popen(
            ["make", "-o", str(venv / ".installed"), "run", f"VENV={venv}", f"PORT={port}"],
            cwd=settings.BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    return Server(process, port, log_path)


@contextlib.contextmanager
def make_run(tmp_path: Path, *, stop_signal: int = signal.SIGINT) -> Iterator[Server]:
    """`make run` on a free port; stopped on exit as Ctrl-C stops it, or with stop_signal."""
    server = start_make_run(tmp_path)
    try:
        server.wait_until_up("make run", healthy_only=True)
        yield server
    finally:
        stop_group(server.process, stop_signal, timeout=60)


# gunicorn as `make run` and docker/ start it (videogen/gunicorn.py), stopping sooner.
GUNICORN_ARGS = ["-c", "python:videogen.gunicorn", "--graceful-timeout", "5"]


@contextlib.contextmanager
def gunicorn(
    log_path: Path, env: dict[str, str], *, workers: int | None = 2, args: list[str] = ()
) -> Iterator[Server]:
    """
    A real gunicorn with `workers` processes (None: videogen/gunicorn.py's) on a free port, its environment
    this process's plus `env` (point DATABASE_URL at the test database:
    tests.support.cluster.test_database_url()). Stopped with SIGTERM on exit.
    """
    port = free_port()
    venv = Path(sys.prefix)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [str(venv / "bin" / "gunicorn"), *GUNICORN_ARGS, "--bind", f"127.0.0.1:{port}",
             *(["--workers", str(workers)] if workers else []), *args],
            cwd=settings.BASE_DIR, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = Server(process, port, log_path)
    try:
        server.wait_until_up("gunicorn")
        yield server
    finally:
        stop_group(process, signal.SIGTERM, timeout=30)
