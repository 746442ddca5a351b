"""
The admin in a real browser: Debian's Chromium, driven by Playwright, against
pytest-django's live server, with a real qcluster process running re-runs.
"""

import time

import pytest
from django.utils import timezone

from jobs.models import ErrorCode, Status, VideoGenerationJob
from tests.support.browser import IN_A_BROWSER, PASSWORD, browser_page

# A first job in a fresh worker builds the tiny model before it runs.
RERUN_TIMEOUT = 120

pytestmark = [*IN_A_BROWSER, pytest.mark.django_db(transaction=True)]


# Run in the page: wait for the player's metadata, then seek, wait for the
# decoded frame and read two of its pixels back through a canvas.
PLAY_VIDEO = """
async () => {
  const video = document.getElementById("job-video");
  const waitFor = (event) => new Promise((resolve) => {
    if (video.error) return resolve();
    video.addEventListener(event, resolve, {once: true});
    video.addEventListener("error", resolve, {once: true});
  });
  if (video.readyState < 1) await waitFor("loadedmetadata");
  const result = {duration: video.duration, error: video.error && video.error.code,
                  width: video.videoWidth, height: video.videoHeight};
  if (video.error) return result;
  video.currentTime = video.duration / 2;
  await waitFor("seeked");
  if (video.readyState < 2) await waitFor("loadeddata");
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  const context = canvas.getContext("2d");
  context.drawImage(video, 0, 0);
  const row = Math.floor(canvas.height / 2);
  result.left = Array.from(context.getImageData(2, row, 1, 1).data);
  result.right = Array.from(context.getImageData(canvas.width - 3, row, 1, 1).data);
  result.error = video.error && video.error.code;
  return result;
}
"""


def test_an_operator_finds_a_users_video_watches_it_and_reruns_a_failed_job(
    live_server, qcluster, operator, make_job, make_completed_job, tmp_path
):
    operator.set_password(PASSWORD)
    operator.save()
    video = make_completed_job(user_id="alice", prompt="a kite over green hills")
    failed = make_job(
        user_id="alice",
        prompt="a boat at dawn",
        status=Status.FAILED,
        error_code=ErrorCode.OUT_OF_MEMORY,
        error_message="Generation failed: CUDA out of memory",
        completed_at=timezone.now(),
    )
    make_completed_job(user_id="bob", prompt="bob's own video")
    responses: list[tuple[str, int]] = []

    with browser_page(tmp_path) as page:
        page.on("response", lambda response: responses.append((response.url, response.status)))

        page.goto(f"{live_server.url}/admin/")
        page.fill("#id_username", "operator")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.click("#content-main a[href$='/jobs/videogenerationjob/']")

        page.fill("input[name=user_id]", "alice")
        page.press("input[name=user_id]", "Enter")
        page.wait_for_url("**user_id=alice**")
        assert page.locator("#result_list tbody tr").count() == 2
        assert "bob's own video" not in page.content()

        page.click(f"#result_list a[href*='{video.pk}']")
        page.locator("#job-video").wait_for()
        played = page.evaluate(PLAY_VIDEO)
        assert played["error"] is None, f"Chromium could not play the H.264 MP4: {played}"
        assert played["duration"] == pytest.approx(video.num_frames / video.fps, abs=0.1)
        assert (played["width"], played["height"]) == (video.width, video.height)
        # The test frames are a red ramp from left to right: a decoded frame shows it.
        assert played["right"][0] - played["left"][0] > 100, played

        page.go_back()
        page.check(f"input[name=_selected_action][value='{failed.pk}']")
        page.select_option("select[name=action]", "rerun_selected")
        page.click("button[name=index]")
        assert page.locator(".messagelist").inner_text().startswith("Re-ran 1 job.")

        status = page.locator(f"#result_list tr:has(a[href*='{failed.pk}']) .job-status")
        deadline = time.monotonic() + RERUN_TIMEOUT
        while status.inner_text() != "Completed" and time.monotonic() < deadline:
            page.wait_for_timeout(500)
            page.reload()
        assert status.inner_text() == "Completed", qcluster.log[-3000:]

    download = f"/api/v1/download/{video.pk}"
    assert any(url.endswith(download) and code == 206 for url, code in responses), responses
    failed.refresh_from_db()
    assert (failed.status, failed.attempts) == (Status.COMPLETED, 2)
    assert VideoGenerationJob.objects.filter(user_id="alice", status=Status.COMPLETED).count() == 2
