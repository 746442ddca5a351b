"""The `videogen` command, run as a user runs it (a subprocess), against the real server."""

import json
import os
import subprocess
import sys
import tomllib
import uuid

import pytest

from tests.support.client import CLIENT_ROOT
from tests.support.decode import decode_mp4
from tests.support.images import I2V, png
from tests.support.processes import free_port

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FAST_FLAGS = ["--width", "64", "--height", "64", "--num-frames", "9", "--num-inference-steps", "2", "--fps", "8"]


def videogen(*args: str, url: str | None = None, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(CLIENT_ROOT), "VIDEOGEN_USER_ID": "carol", **env}
    if url:
        environment["VIDEOGEN_URL"] = url
    return subprocess.run([sys.executable, "-m", "videogen_client", *args], env=environment, capture_output=True,
                          text=True, timeout=300)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("videogen: "), result.stderr
    return lines[0]


def test_the_console_script_is_the_cli_main():
    project = tomllib.loads((CLIENT_ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "videogen-client"
    assert project["scripts"] == {"videogen": "videogen_client.cli:main"}


def test_generate_waits_with_a_progress_bar_then_downloads(url, tmp_path):
    out = tmp_path / "fox.mp4"

    result = videogen("generate", "a red fox", *FAST_FLAGS, "--seed", "7", "-o", str(out), url=url)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    assert decode_mp4(out)[1].shape == (9, 64, 64, 3)
    # Not a terminal: the bar is plain lines, ending at the last step.
    assert "step 2/2" in result.stderr or "completed" in result.stderr or "running" in result.stderr, result.stderr
    job_id = result.stderr.splitlines()[0].removeprefix("job ")

    status = videogen("status", job_id, url=url)
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert (shown["job_id"], shown["status"], shown["seed"], shown["user_id"]) == (job_id, "completed", 7, "carol")

    listing = videogen("list", url=url)
    assert listing.returncode == 0 and listing.stdout.split("\t")[0] == job_id

    download = videogen("download", job_id, "-o", str(tmp_path / "again.mp4"), url=url)
    assert download.returncode == 0 and (tmp_path / "again.mp4").read_bytes() == out.read_bytes()

    watch = videogen("watch", job_id, url=url)
    assert watch.returncode in (0, 1)
    if watch.returncode == 0:
        assert watch.stdout.strip().splitlines()[-1] == "completed completed"
    else:
        assert "no event stream" in one_line_error(watch)

    deleted = videogen("delete", job_id, url=url)
    assert deleted.returncode == 0 and deleted.stdout.strip() == f"{job_id} deleted"
    assert "404" in one_line_error(videogen("status", job_id, url=url))


def test_generate_with_an_image_file_prints_the_job_id_and_cancel_works(url, tmp_path):
    (tmp_path / "cat.png").write_bytes(png(seed=3))

    result = videogen("generate", "a cat", "--image", str(tmp_path / "cat.png"), "--model", I2V,
                      "--num-inference-steps", "200", "--width", "64", "--height", "64", "--num-frames", "5", url=url)

    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    assert str(uuid.UUID(job_id)) == job_id
    cancelled = videogen("cancel", job_id, url=url)
    assert cancelled.returncode == 0 and cancelled.stdout.strip() == f"{job_id} cancelled"
    assert json.loads(videogen("status", job_id, url=url).stdout)["mode"] == "image-to-video"


def test_models_lists_the_default_first_marked(url):
    result = videogen("models", url=url)

    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("* tiny-random\t") and any(line.startswith(f"  {I2V}\timage-to-video") for line in lines)


def test_errors_are_one_line_and_a_non_zero_exit(url, tmp_path):
    assert "400: Invalid request. fps:" in one_line_error(videogen("generate", "a fox", "--fps", "999", url=url))
    assert "404: No such job." in one_line_error(videogen("status", str(uuid.uuid4()), url=url))
    pending = videogen("generate", "x", "--num-inference-steps", "200", *FAST_FLAGS[:6], url=url).stdout.strip()
    assert "409: The job is" in one_line_error(videogen("download", pending, url=url))
    videogen("cancel", pending, url=url)
    unreachable = one_line_error(videogen("models", url=f"http://127.0.0.1:{free_port()}"))
    assert "error:" in unreachable and "127.0.0.1" in unreachable
    missing = one_line_error(videogen("generate", "a cat", "--image", str(tmp_path / "nope.png"), url=url))
    assert "nope.png" in missing
    # The flags work as well as the environment.
    assert videogen("--url", url, "--user-id", "carol", "models").returncode == 0


def test_the_cli_works_against_make_run(tmp_path):
    from tests.support.server import make_run

    with make_run(tmp_path) as server:
        url = f"http://127.0.0.1:{server.port}"
        made = videogen("generate", "A red fox in the snow", *FAST_FLAGS, "-o", str(tmp_path / "fox.mp4"), url=url)
        listed = videogen("list", "--json", url=url)

    assert made.returncode == 0, made.stderr
    assert decode_mp4(tmp_path / "fox.mp4")[1].shape == (9, 64, 64, 3)
    assert json.loads(listed.stdout)["prompt"] == "A red fox in the snow"
