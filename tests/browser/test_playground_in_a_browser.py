"""
The playground (`/`) in a real browser: Debian's Chromium, driven by
Playwright, against `make run` (gunicorn with its handoff worker, so the event
stream is the real one, and a qcluster running the tiny image model).
Screenshots of each state are kept under the test's temporary directory and
copied to var/test-artifacts/playground/.
"""

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from PIL import Image

from tests.support.browser import IN_A_BROWSER, browser_page
from tests.support.server import make_run

# A first job in a fresh worker builds the tiny model before it runs.
JOB_TIMEOUT_MS = 180_000
I2V = "tiny-random-i2v"
ARTIFACTS = Path(settings.BASE_DIR) / "var" / "test-artifacts" / "playground"

pytestmark = IN_A_BROWSER


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # A live preview at every step, and each step's progress written, so a short job shows both.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VIDEOGEN_PREVIEW_EVERY", "1")
        patch.setenv("VIDEOGEN_PROGRESS_INTERVAL", "0")
        with make_run(tmp_path_factory.mktemp("playground")) as running:
            yield running


class Screenshots:
    """Each state's screenshot, in the test's tmp_path and in var/test-artifacts/playground/."""

    def __init__(self, page, tmp_path: Path, prefix: str):
        self.page = page
        self.folder = tmp_path / "screenshots"
        self.folder.mkdir(exist_ok=True)
        self.prefix = prefix
        self.taken: list[str] = []
        # This run's screenshots only: none left from an earlier run under the same names.
        for stale in ARTIFACTS.glob(f"{prefix}-*.png"):
            stale.unlink()

    def take(self, state: str) -> None:
        name = f"{self.prefix}-{len(self.taken) + 1}-{state}.png"
        path = self.folder / name
        self.page.screenshot(path=str(path), full_page=True)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, ARTIFACTS / name)
        self.taken.append(name)


def png_bytes(width: int = 96, height: int = 64) -> bytes:
    pixels = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def api_status(server, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


# Drop a PNG on a drop zone as a desktop drag would: a DataTransfer holding the file.
DROP_FILE = """
([zoneId, name, b64]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, {type: "image/png"}));
  const zone = document.getElementById(zoneId);
  for (const type of ["dragenter", "dragover", "drop"]) {
    zone.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true, cancelable: true}));
  }
}
"""

# Every progress text and whether a live preview was ever shown, recorded as the page changes.
RECORD_PROGRESS = """
() => {
  window.seen = {progress: [], preview: false};
  new MutationObserver(() => {
    window.seen.progress.push(document.getElementById("job-progress").value);
    if (!document.getElementById("live-preview-figure").hidden) window.seen.preview = true;
  }).observe(document.getElementById("job-section"), {subtree: true, childList: true, characterData: true, attributes: true});
}
"""

# play() resolves once playback has started (rejects if the video cannot play); then a moment of it.
PLAY_VIDEO = """
async () => {
  const video = document.getElementById("job-video");
  video.muted = true;
  let failure = null;
  await video.play().catch((err) => { failure = String(err); });
  await new Promise((resolve) => setTimeout(resolve, 300));
  return {duration: video.duration, currentTime: video.currentTime, error: failure || (video.error && video.error.code),
          width: video.videoWidth, height: video.videoHeight, poster: video.poster};
}
"""


def sign_in(page, server, user_id: str) -> None:
    page.goto(f"http://127.0.0.1:{server.port}/")
    page.get_by_text("trusts the user id").wait_for()
    page.get_by_label("User id").fill(user_id)
    page.get_by_role("button", name="Use", exact=True).click()
    page.get_by_label("Prompt").wait_for()


def test_a_user_submits_an_image_watches_it_run_plays_the_video_and_deletes_it(server, tmp_path):
    requests: list[tuple[str, str]] = []
    events_answers: list[tuple[int, str]] = []
    with browser_page(tmp_path) as page:
        shots = Screenshots(page, tmp_path, "image-job")
        page.on("request", lambda request: requests.append((request.method, request.url)))
        page.on("response", lambda response: "/events" in response.url and events_answers.append(
            (response.status, response.headers.get("content-type", ""))))
        sign_in(page, server, "alice")

        page.get_by_label("Prompt").fill("a cat walks out of the picture")
        page.get_by_label("Model").select_option(I2V)
        page.get_by_label("Width").fill("64")
        page.get_by_label("Height").fill("64")
        page.get_by_label("Frames").fill("9")
        # Enough steps that the progress bar is seen between 0 and 100, even where the stream is read once a second.
        page.get_by_label("Steps").fill("200")
        page.evaluate(DROP_FILE, ["image-drop", "cat.png", base64.b64encode(png_bytes()).decode()])
        assert page.locator("#image-chosen").inner_text().startswith("Chosen: cat.png")
        shots.take("form-with-a-dropped-image")

        page.evaluate(RECORD_PROGRESS)
        page.get_by_role("button", name="Generate").click()
        page.locator("#job-id").wait_for()
        job_id = page.locator("#job-id").inner_text()
        assert page.evaluate("document.activeElement.id") == "job-heading"
        shots.take("submitted")

        page.wait_for_function("document.getElementById('job-status').textContent.startsWith('running')",
                               timeout=JOB_TIMEOUT_MS)
        shots.take("running")
        # Every step draws a live preview (VIDEOGEN_PREVIEW_EVERY=1): one is shown before the result.
        page.wait_for_function(
            "!document.getElementById('live-preview-figure').hidden || !document.getElementById('job-result').hidden",
            timeout=JOB_TIMEOUT_MS,
        )
        if page.locator("#live-preview").is_visible():
            shots.take("live-preview")

        page.locator("#result-heading").wait_for(timeout=JOB_TIMEOUT_MS)
        assert page.locator("#job-status").inner_text().startswith("completed")
        assert page.evaluate("document.getElementById('job-progress').value") == 100
        assert page.locator("#job-progress-text").inner_text().startswith("100%")
        seen = page.evaluate("window.seen")
        assert seen["progress"] and seen["progress"][-1] == 100
        assert seen["progress"] == sorted(seen["progress"]), seen["progress"]
        assert 0 < min(value for value in seen["progress"] if value) < 100, seen["progress"]
        assert seen["preview"], "no live preview was shown while the job ran"
        assert page.evaluate("document.activeElement.id") == "result-heading"

        played = page.evaluate(PLAY_VIDEO)
        assert played["error"] is None, f"Chromium could not play the MP4: {played}"
        assert played["duration"] > 0 and played["currentTime"] > 0, played
        assert (played["width"], played["height"]) == (64, 64)
        assert f"/api/v1/poster/{job_id}?user_id=alice" in played["poster"]
        shots.take("completed-and-playing")

        # Watched through the event stream, not by polling GET /job.
        assert (200, "text/event-stream; charset=utf-8") in events_answers, events_answers
        assert ("GET", f"http://127.0.0.1:{server.port}/api/v1/job/{job_id}/events?user_id=alice") in requests
        assert not [url for method, url in requests if url.startswith(
            f"http://127.0.0.1:{server.port}/api/v1/job/{job_id}?")], "the page polled GET /job"

        # In the user's videos, newest first; then deleted.
        item = page.locator(f"#videos li[data-job-id='{job_id}']")
        item.wait_for()
        assert page.locator("#videos li").first.get_attribute("data-job-id") == job_id
        shots.take("in-your-videos")
        page.once("dialog", lambda dialog: dialog.accept())
        item.get_by_role("button", name="Delete").click()
        item.wait_for(state="detached")
        assert page.locator("#videos-status").inner_text().startswith("Deleted")
        assert page.locator("#job-section").is_hidden()
        assert page.evaluate("document.activeElement.id") == "videos-heading"
        shots.take("deleted")

    assert ("DELETE", f"http://127.0.0.1:{server.port}/api/v1/job/{job_id}?user_id=alice") in requests
    assert api_status(server, f"/api/v1/job/{job_id}?user_id=alice") == 404
    print(f"screenshots: {shots.folder} and {ARTIFACTS}: {shots.taken}")


def press_tab_until(page, predicate: str, limit: int = 40) -> list[str]:
    """Tab until the focused element matches the JS predicate (given `el`); the ids passed on the way."""
    passed = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(f"(() => {{ const el = document.activeElement; return {predicate}; }})()"):
            return passed
        passed.append(page.evaluate("document.activeElement.id || document.activeElement.tagName"))
    raise AssertionError(f"Tab never reached {predicate}; passed {passed}")


def focused(page) -> str:
    return page.evaluate("document.activeElement.id")


def test_the_form_works_from_the_keyboard_alone_and_shows_a_400_visibly(server, tmp_path):
    image = tmp_path / "first.png"
    image.write_bytes(png_bytes())
    with browser_page(tmp_path) as page:
        shots = Screenshots(page, tmp_path, "keyboard")
        page.goto(f"http://127.0.0.1:{server.port}/")
        page.get_by_text("trusts the user id").wait_for()

        press_tab_until(page, "el.id === 'user-id'")
        page.keyboard.type("bob")
        page.keyboard.press("Enter")
        page.wait_for_function("document.activeElement.id === 'generate-heading'")

        # Every control in order, each typed into or chosen without a mouse.
        page.keyboard.press("Tab")
        assert focused(page) == "prompt"
        page.keyboard.type("a lighthouse at night")
        page.keyboard.press("Tab")
        assert focused(page) == "model"
        page.keyboard.press("ArrowDown")
        assert page.locator("#model").input_value() == I2V
        page.locator("#image").wait_for()
        for field, value in (("width", "64"), ("height", "64"), ("num-frames", "999"),
                             ("num-inference-steps", "2"), ("seed", "7")):
            page.keyboard.press("Tab")
            assert focused(page) == field
            page.keyboard.press("Control+A")
            page.keyboard.type(value)
        page.keyboard.press("Tab")
        assert focused(page) == "image"
        with page.expect_file_chooser() as chooser:
            page.keyboard.press("Space")
        chooser.value.set_files(str(image))
        assert page.locator("#image-chosen").inner_text().startswith("Chosen: first.png")
        shots.take("form-filled-by-keyboard")

        # 999 frames is past the model's bounds: the server's 400, shown and focused.
        page.keyboard.press("Tab")
        assert focused(page) == "generate-submit"
        page.keyboard.press("Enter")
        alert = page.get_by_role("alert")
        alert.wait_for()
        assert focused(page) == "error"
        assert alert.inner_text().startswith("Error 400: Invalid request. num_frames")
        assert page.locator("#num-frames").get_attribute("aria-invalid") == "true"
        assert page.locator("#num-frames-error").is_visible()
        assert "num-frames-error" in page.locator("#num-frames").get_attribute("aria-describedby")
        shots.take("a-400-shown")

        # From the alert to the field in one step, fixed, submitted with Enter.
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.getAttribute('href')") == "#num-frames"
        page.keyboard.press("Enter")
        assert focused(page) == "num-frames"
        page.keyboard.press("Control+A")
        page.keyboard.type("5")
        page.keyboard.press("Enter")
        page.wait_for_function("document.activeElement.id === 'job-heading'")
        assert alert.is_hidden()
        assert page.locator("#num-frames").get_attribute("aria-invalid") is None
        page.wait_for_function("document.activeElement.id === 'result-heading'", timeout=JOB_TIMEOUT_MS)
        job_id = page.locator("#job-id").inner_text()
        shots.take("completed")

        # Delete it from the keyboard too.
        press_tab_until(page, f"el.closest(\"li[data-job-id='{job_id}']\") && el.textContent === 'Delete'")
        page.once("dialog", lambda dialog: dialog.accept())
        page.keyboard.press("Enter")
        page.wait_for_function("document.activeElement.id === 'videos-heading'")
        assert page.locator(f"#videos li[data-job-id='{job_id}']").count() == 0
        shots.take("deleted")
    assert api_status(server, f"/api/v1/job/{job_id}?user_id=bob") == 404



def post_json(server, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def get_json(server, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=30) as response:
        return json.load(response)


def test_a_queued_job_shows_its_place_and_your_videos_come_newest_first_in_pages(server, tmp_path):
    image = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    # Seven jobs ahead of the page's, on make run's one worker.
    jobs = [
        post_json(server, "/api/v1/generate", {"user_id": "erin", "prompt": f"video {number}", "model": I2V, "image": image,
                                               "width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 3})["job_id"]
        for number in range(7)
    ]
    picture = tmp_path / "first.png"
    picture.write_bytes(png_bytes())

    with browser_page(tmp_path) as page:
        shots = Screenshots(page, tmp_path, "queue-and-pages")
        sign_in(page, server, "erin")
        # The image inputs follow the model's modes (GET /models).
        assert page.get_by_label("First frame (PNG, JPEG or WebP)").is_hidden()
        page.get_by_label("Model").select_option("tiny-random-wan-flf2v")
        assert page.get_by_label("First frame (PNG, JPEG or WebP)").is_visible()
        assert page.get_by_label("Last frame (PNG, JPEG or WebP)").is_visible()
        page.get_by_label("Prompt").fill("the last in line")
        page.get_by_label("Model").select_option(I2V)
        assert page.get_by_label("Last frame (PNG, JPEG or WebP)").is_hidden()
        for label, value in (("Width", "64"), ("Height", "64"), ("Frames", "1"), ("Steps", "1")):
            page.get_by_label(label).fill(value)
        page.locator("#image").set_input_files(str(picture))
        page.get_by_role("button", name="Generate").click()
        page.wait_for_function("document.getElementById('job-queue').textContent.startsWith('Position')")
        assert re.fullmatch(r"Position [1-7](, starting (in about \d+ s \(.+\)|any moment))?",
                            page.locator("#job-queue").inner_text()), page.locator("#job-queue").inner_text()
        shots.take("queued")
        page.locator("#result-heading").wait_for(timeout=JOB_TIMEOUT_MS)
        jobs.append(page.locator("#job-id").inner_text())

        items = page.locator("#videos li")
        page.wait_for_function("document.querySelectorAll('#videos li').length === 6")
        assert [items.nth(i).get_attribute("data-job-id") for i in range(6)] == jobs[:1:-1]
        assert page.locator("#videos-status").inner_text() == "8 videos, newest first."
        assert page.get_by_role("button", name="Previous page").is_disabled()
        shots.take("first-page")

        page.get_by_role("button", name="Next page").click()
        page.wait_for_function("document.querySelectorAll('#videos li').length === 2")
        assert [items.nth(i).get_attribute("data-job-id") for i in range(2)] == jobs[1::-1]
        assert page.get_by_role("button", name="Next page").is_disabled()
        assert focused(page) == "videos-heading"
        shots.take("second-page")

        page.get_by_role("button", name="Previous page").click()
        page.wait_for_function("document.querySelectorAll('#videos li').length === 6")
        assert items.first.get_attribute("data-job-id") == jobs[-1]


@pytest.fixture
def keyed_server(tmp_path):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VIDEOGEN_AUTH", "api_key")
        with make_run(tmp_path) as running:
            yield running


def create_api_key(data_dir: Path, user_id: str) -> str:
    env = {name: value for name, value in os.environ.items()
           if name not in ("DATABASE_URL", "REDIS_URL", "VIDEOGEN_MEDIA_ROOT", "DJANGO_SETTINGS_MODULE")}
    made = subprocess.run(
        [sys.executable, "manage.py", "create_api_key", "--user-id", user_id],
        cwd=settings.BASE_DIR, env={**env, "VIDEOGEN_DATA_DIR": str(data_dir)},
        capture_output=True, text=True, check=True,
    )
    return made.stdout.strip().splitlines()[-1]


def test_with_api_keys_on_the_page_asks_for_one_streams_with_it_and_extends_a_video(keyed_server, tmp_path):
    key = create_api_key(tmp_path / "data", "dave")
    requests: list[tuple[str, str]] = []
    streams: list[str] = []
    base = f"http://127.0.0.1:{keyed_server.port}"
    with browser_page(tmp_path) as page:
        shots = Screenshots(page, tmp_path, "api-key")
        page.on("request", lambda request: requests.append((request.method, request.url)))
        page.on("response", lambda response: "/events" in response.url and streams.append(
            f"{response.status} {response.headers.get('content-type')} {response.request.headers.get('authorization')}"))
        page.goto(f"{base}/")
        page.locator("#auth-mode", has_text="wants an API key").wait_for()
        assert page.get_by_label("API key").is_visible()

        # A wrong key: the server's 401, shown.
        page.get_by_label("API key").fill("vg_0000000000000000_not-a-key")
        page.get_by_role("button", name="Use", exact=True).click()
        page.get_by_role("alert").wait_for()
        assert page.get_by_role("alert").inner_text().startswith("Error 401")
        assert page.locator("#generate-form").is_hidden()
        shots.take("a-401-shown")

        page.get_by_label("API key").fill(key)
        page.get_by_role("button", name="Use", exact=True).click()
        page.get_by_label("Prompt").fill("a lighthouse in fog")
        page.get_by_label("Model").select_option(I2V)
        for label, value in (("Width", "64"), ("Height", "64"), ("Frames", "9"), ("Steps", "2"), ("Seed", "3")):
            page.get_by_label(label).fill(value)
        image = tmp_path / "fog.png"
        image.write_bytes(png_bytes())
        page.locator("#image").set_input_files(str(image))
        page.get_by_role("button", name="Generate").click()
        page.locator("#job-id").wait_for()
        assert page.locator("#watch-path").inner_text().startswith("API keys are on")
        job_id = page.locator("#job-id").inner_text()
        page.locator("#result-heading").wait_for(timeout=JOB_TIMEOUT_MS)
        played = page.evaluate(PLAY_VIDEO)
        assert played["error"] is None and played["duration"] == pytest.approx(9 / 24, abs=0.05), played
        # The key cannot ride on a <video src>: the page fetched the MP4 with it.
        assert page.locator("#job-video").get_attribute("src").startswith("blob:")
        # The event stream, read with fetch so that it carries the key; no polls.
        assert f"200 text/event-stream; charset=utf-8 Bearer {key}" in streams, streams
        assert not [url for method, url in requests if url.startswith(f"{base}/api/v1/job/{job_id}?")]
        shots.take("completed-through-the-stream")

        # Extend it: its 9 frames, then 4 new ones.
        page.locator(f"#videos li[data-job-id='{job_id}']").get_by_role("button", name="Extend").click()
        assert focused(page) == "prompt"
        assert page.locator("#extending").is_visible() and page.get_by_label("Model").is_hidden()
        page.get_by_label("Prompt").fill("the fog lifts")
        page.get_by_label("Frames").fill("4")
        shots.take("extending")
        # A proxy in the way that will not pass the stream: the page polls GET /job instead.
        page.route("**/api/v1/job/*/events*", lambda route: route.fulfill(status=502, body="Bad gateway"))
        page.get_by_role("button", name="Extend", exact=True).click()
        page.wait_for_function(f"document.getElementById('job-id').textContent !== '{job_id}'")
        extended = page.locator("#job-id").inner_text()
        page.locator("#result-heading").wait_for(timeout=JOB_TIMEOUT_MS)
        page.wait_for_function("document.activeElement.id === 'result-heading'", timeout=JOB_TIMEOUT_MS)
        played = page.evaluate(PLAY_VIDEO)
        assert played["error"] is None and played["duration"] == pytest.approx(13 / 24, abs=0.05), played
        assert page.locator("#extending").is_hidden()
        assert page.locator("#watch-path").inner_text().startswith("The event stream was refused")
        shots.take("extended-by-polling")

    assert ("GET", f"{base}/api/v1/job/{extended}") in requests, "the page did not poll the extend"
    assert extended != job_id
