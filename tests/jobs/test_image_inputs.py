"""
Image inputs at POST /generate: multipart file parts, data: URIs
and URLs fetched from a real HTTP server; what is refused, and how; where
the inputs are kept and who may read them.
"""

import base64
import contextlib
import hashlib
import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.files.storage import default_storage
from PIL import Image

from jobs.models import Mode, Status, VideoGenerationJob
from tests.support.images import FLF, I2V, png
from tests.support.jobs import FAST_JOB

STEPS = {"num_inference_steps": 2, "num_frames": 9, "fps": 8}


def data_uri(data: bytes, declared: str = "image/png") -> str:
    return f"data:{declared};base64," + base64.b64encode(data).decode()


def upload(name: str, data: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type="application/octet-stream")


@pytest.fixture
def submit_form(api, db, django_capture_on_commit_callbacks):
    """POST /generate as multipart/form-data, as curl -F sends it."""

    def post(fields: dict, **headers):
        with django_capture_on_commit_callbacks(execute=True):
            return api.post("/api/v1/generate", fields, format="multipart", **headers)

    return post


@pytest.fixture(autouse=True)
def image_models(settings):
    settings.VIDEOGEN_MODELS = ["tiny-random", I2V, FLF]


def no_job_was_made():
    return VideoGenerationJob.objects.count() == 0


# --- Each way an image arrives.


def test_a_multipart_image_makes_an_image_to_video_job_sized_like_the_image(submit_form, api):
    image = png(96, 64)

    response = submit_form({"user_id": "alice", "prompt": "a cat", "model": I2V, "image": upload("cat.png", image),
                            **{name: str(value) for name, value in STEPS.items()}})

    assert response.status_code == 202, response.json()
    body = response.json()
    assert (body["mode"], body["last_image_url"], body["extend_job_id"]) == ("image-to-video", None, None)
    job = VideoGenerationJob.objects.get(pk=body["job_id"])
    # 3:2 like the image, at the model's default area, in the model's multiples of 16.
    assert job.width * 2 == job.height * 3 and job.width % 16 == 0
    assert job.inputs["image"] == {
        "sha256": hashlib.sha256(image).hexdigest(), "format": "PNG", "width": 96, "height": 64, "bytes": len(image)
    }
    served = api.get(body["image_url"].replace("http://testserver", "") + "?user_id=alice")
    assert served.status_code == 200
    assert served["Content-Type"] == "image/png"
    assert b"".join(served.streaming_content) == image


def test_a_data_uri_image_is_taken_whatever_type_it_declares(submit):
    image = png(fmt="JPEG")

    response = submit({"user_id": "alice", "prompt": "a cat", "model": I2V, "image": data_uri(image, "image/png"),
                       **STEPS})

    assert response.status_code == 202, response.json()
    assert VideoGenerationJob.objects.get().inputs["image"]["format"] == "JPEG"


def test_a_first_and_last_frame_make_a_first_last_frame_job(submit):
    response = submit({"user_id": "alice", "prompt": "a cat", "model": FLF, "image": data_uri(png(seed=1)),
                       "last_image": data_uri(png(seed=2)), "width": 64, "height": 64, **STEPS})

    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["mode"] == "first-last-frame"
    assert body["image_url"].endswith(f"/api/v1/image/{body['job_id']}")
    assert body["last_image_url"].endswith(f"/api/v1/last_image/{body['job_id']}")
    assert (body["width"], body["height"]) == (64, 64)


def test_form_fields_are_numbers_as_text_and_each_is_given_once(api, db):
    response = api.post(
        "/api/v1/generate",
        data=(
            "--b\r\nContent-Disposition: form-data; name=\"user_id\"\r\n\r\nalice\r\n"
            "--b\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\na cat\r\n"
            "--b\r\nContent-Disposition: form-data; name=\"num_frames\"\r\n\r\n9\r\n"
            "--b\r\nContent-Disposition: form-data; name=\"num_frames\"\r\n\r\n17\r\n--b--\r\n"
        ),
        content_type="multipart/form-data; boundary=b",
    )

    assert response.status_code == 400
    assert "num_frames" in response.json()["errors"]


def test_a_form_answers_field_errors_as_json_does(submit_form):
    response = submit_form({"user_id": "alice", "prompt": "a cat", "fps": "sixty"})

    assert response.status_code == 400
    assert response.json()["errors"]["fps"] == ["A valid integer is required."]


def test_only_the_two_image_fields_may_be_file_parts(submit_form):
    response = submit_form({"user_id": "alice", "prompt": "a cat", "model": I2V, "image": upload("a.png", png()),
                            "poster": upload("b.png", png())})

    assert response.status_code == 400
    assert "poster" in response.json()["errors"]
    assert no_job_was_made()


# --- Modes and models.


def test_an_image_without_a_model_goes_to_a_model_that_can_take_it(submit, settings):
    settings.VIDEOGEN_DEFAULT_MODEL = "tiny-random"

    response = submit({"user_id": "alice", "prompt": "a cat", "image": data_uri(png()), **STEPS})

    assert response.status_code == 202, response.json()
    assert response.json()["model"] == I2V


def test_a_model_without_the_mode_is_a_400_naming_the_models_that_have_it(submit):
    response = submit({"user_id": "alice", "prompt": "a cat", "model": I2V, "image": data_uri(png()),
                       "last_image": data_uri(png(seed=1)), **STEPS})

    assert response.status_code == 400
    [message] = response.json()["errors"]["model"]
    assert "first-last-frame" in message and FLF in message
    assert no_job_was_made()


def test_a_text_model_given_an_image_is_a_400_naming_model(submit):
    response = submit({"user_id": "alice", "prompt": "a cat", "model": "tiny-random", "image": data_uri(png()),
                       **STEPS})

    assert response.status_code == 400
    assert I2V in response.json()["errors"]["model"][0]


def test_last_image_needs_image(submit):
    response = submit({"user_id": "alice", "prompt": "a cat", "model": FLF, "last_image": data_uri(png()), **STEPS})

    assert response.status_code == 400
    assert response.json()["errors"]["last_image"] == ["last_image needs image, the first frame."]


def test_an_unknown_fit_is_a_400_naming_it(submit):
    response = submit({"user_id": "alice", "prompt": "a cat", "model": I2V, "image": data_uri(png()),
                       "image_fit": "zoom", **STEPS})

    assert response.status_code == 400
    assert "image_fit" in response.json()["errors"]


def test_a_text_job_shows_no_inputs(submit):
    body = submit({"user_id": "alice", "prompt": "a cat", **FAST_JOB}).json()

    assert (body["mode"], body["image_url"], body["last_image_url"], body["extend_job_id"]) == (
        "text-to-video", None, None, None
    )


# --- Hostile input: a 400 (or 413) naming the field, and no job.

TRUNCATED_PNG = png(128, 128)[:-400]
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'


def animated_png() -> bytes:
    buffer = io.BytesIO()
    frames = [Image.new("RGB", (16, 16), colour) for colour in ("red", "blue")]
    frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(data_uri(b"this is not an image"), id="not-an-image"),
        pytest.param(data_uri(TRUNCATED_PNG), id="truncated"),
        pytest.param(data_uri(SVG, "image/svg+xml"), id="svg"),
        pytest.param(data_uri(animated_png()), id="animated"),
        pytest.param("data:image/png;base64,iVBORw0KGgo$$$$", id="broken-base64"),
        pytest.param("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAA=", id="base64-bad-length"),
        pytest.param("data:text/plain;base64,aGVsbG8=", id="not-an-image-data-uri"),
        pytest.param("data:image/png;base64,", id="empty"),
        pytest.param("file:///etc/passwd", id="file-url"),
        pytest.param("ftp://example.com/cat.png", id="ftp-url"),
        pytest.param("http://example.com/cat.png", id="plain-http"),
        pytest.param("https://127.0.0.1/cat.png", id="loopback"),
        pytest.param("https://10.1.2.3/cat.png", id="private-address"),
        pytest.param("https://localhost/cat.png", id="a-name-for-loopback"),
        pytest.param(12, id="a-number"),
    ],
)
def test_hostile_images_are_a_400_naming_the_field(submit, value):
    response = submit({"user_id": "alice", "prompt": "a cat", "model": I2V, "image": value, **STEPS})

    assert response.status_code == 400, response.json()
    assert list(response.json()["errors"]) == ["image"]
    assert no_job_was_made()


@pytest.mark.parametrize("data", [b"", b"GIF89a", TRUNCATED_PNG, SVG], ids=["empty", "gif", "truncated", "svg"])
def test_hostile_file_parts_are_a_400_naming_the_field(submit_form, data):
    response = submit_form({"user_id": "alice", "prompt": "a cat", "model": FLF, "image": upload("a.png", png()),
                            "last_image": upload("b.png", data)})

    assert response.status_code == 400, response.json()
    assert list(response.json()["errors"]) == ["last_image"]
    assert no_job_was_made()


def test_an_image_over_the_byte_limit_is_a_413_naming_it(submit, submit_form, settings):
    large = png(128, 128)
    # Over the image limit, within the body limit that follows from it: the image's own check answers.
    settings.VIDEOGEN_MAX_IMAGE_BYTES = len(large) - 1000

    for response in (
        submit({"user_id": "alice", "prompt": "a cat", "model": I2V, "image": data_uri(large)}),
        submit_form({"user_id": "alice", "prompt": "a cat", "model": I2V, "image": upload("a.png", large)}),
    ):
        assert response.status_code == 413, response.json()
        assert list(response.json()["errors"]) == ["image"]
    assert no_job_was_made()


def test_an_image_over_the_pixel_cap_is_a_400(submit, settings):
    settings.VIDEOGEN_MAX_IMAGE_PIXELS = 1000

    response = submit({"user_id": "alice", "prompt": "a cat", "model": I2V, "image": data_uri(png(64, 64))})

    assert response.status_code == 400
    assert "pixels" in response.json()["errors"]["image"][0]


def test_a_body_over_the_limit_with_its_images_is_a_413_before_it_is_read(submit, settings):
    settings.VIDEOGEN_MAX_IMAGE_BYTES = 4096

    response = submit({"user_id": "alice", "prompt": "a cat", "model": I2V, "image": data_uri(png(256, 256))})

    assert response.status_code == 413
    assert "the limit is" in response.json()["detail"]
    assert no_job_was_made()


def test_a_body_with_two_images_at_the_limit_is_not_refused_for_its_size(submit, settings):
    image = png(512, 512)
    settings.VIDEOGEN_MAX_IMAGE_BYTES = len(image)

    response = submit({"user_id": "alice", "prompt": "a cat", "model": FLF, "image": data_uri(image),
                       "last_image": data_uri(image), "width": 64, "height": 64, **STEPS})

    assert response.status_code == 202, response.json()


# --- Image URLs, fetched from a real server.


class ImageServer(BaseHTTPRequestHandler):
    image = png(80, 48)
    slow_seconds = 5.0

    def do_GET(self):
        if self.path == "/cat.png":
            self._send(200, self.image)
        elif self.path.startswith("/hop/"):
            hops = int(self.path.rsplit("/", 1)[1])
            self._redirect("/cat.png" if hops == 0 else f"/hop/{hops - 1}")
        elif self.path == "/to-localhost":
            self._redirect(f"https://localhost:{self.server.server_port}/cat.png")
        elif self.path == "/slow":
            time.sleep(self.slow_seconds)
            self._send(200, self.image)
        elif self.path == "/endless":
            self.send_response(200)
            self.end_headers()
            with contextlib.suppress(OSError):
                while True:
                    self.wfile.write(b"\x00" * 65536)
        else:
            self._send(404, b"")

    def _send(self, status: int, body: bytes):
        self.send_response(status)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str):
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def image_server(settings):
    server = ThreadingHTTPServer(("127.0.0.1", 0), ImageServer)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # Only 127.0.0.1 is trusted: the name localhost is not, though it is the same machine.
    settings.VIDEOGEN_IMAGE_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.VIDEOGEN_IMAGE_FETCH_TIMEOUT = 1.0
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_an_image_url_is_fetched_at_submit_and_stored(submit, image_server):
    response = submit({"user_id": "alice", "prompt": "a cat", "model": I2V, "image": f"{image_server}/cat.png",
                       **STEPS})

    assert response.status_code == 202, response.json()
    job = VideoGenerationJob.objects.get()
    assert job.inputs["image"]["sha256"] == hashlib.sha256(ImageServer.image).hexdigest()
    with default_storage.open(job.image.name) as stored:
        assert stored.read() == ImageServer.image


def test_three_redirects_are_followed_and_a_fourth_is_refused(submit, image_server):
    followed = submit({"user_id": "alice", "prompt": "a cat", "model": I2V, "image": f"{image_server}/hop/2", **STEPS})
    refused = submit({"user_id": "alice", "prompt": "a cat", "model": I2V, "image": f"{image_server}/hop/3", **STEPS})

    assert followed.status_code == 202, followed.json()
    assert refused.status_code == 400
    assert "redirected more than 3 times" in refused.json()["errors"]["image"][0]


@pytest.mark.parametrize(
    "path, reason",
    [
        ("/to-localhost", "loopback"),
        ("/slow", "longer than 1 seconds"),
        ("/missing", "HTTP 404"),
        ("/endless", "the limit is"),
    ],
)
def test_a_url_that_cannot_give_an_image_in_time_and_size_is_refused(submit, image_server, settings, path, reason):
    settings.VIDEOGEN_MAX_IMAGE_BYTES = 1024 * 1024
    started = time.monotonic()

    response = submit({"user_id": "alice", "prompt": "a cat", "model": I2V, "image": image_server + path, **STEPS})

    assert response.status_code in (400, 413), response.json()
    assert reason in response.json()["errors"]["image"][0]
    assert time.monotonic() - started < 3
    assert no_job_was_made()


# --- Idempotency, ownership, deletion.


def test_the_idempotency_fingerprint_includes_the_images(submit):
    first = submit({"user_id": "alice", "prompt": "a cat", "model": I2V, "image": data_uri(png(seed=1)), **STEPS},
                   HTTP_IDEMPOTENCY_KEY="k1")
    retry = submit({"user_id": "alice", "prompt": "a cat", "model": I2V, "image": data_uri(png(seed=1)), **STEPS},
                   HTTP_IDEMPOTENCY_KEY="k1")
    other = submit({"user_id": "alice", "prompt": "a cat", "model": I2V, "image": data_uri(png(seed=2)), **STEPS},
                   HTTP_IDEMPOTENCY_KEY="k1")

    assert (first.status_code, retry.status_code, other.status_code) == (202, 200, 422)
    assert retry.json()["job_id"] == first.json()["job_id"]
    # The retry's and the refused request's copies were not kept.
    assert default_storage.listdir("inputs")[1] == [VideoGenerationJob.objects.get().image.name.split("/")[1]]


def test_another_users_inputs_are_a_404_like_a_missing_job(submit, api):
    body = submit({"user_id": "alice", "prompt": "a cat", "model": FLF, "image": data_uri(png()),
                   "last_image": data_uri(png(seed=3)), "width": 64, "height": 64, **STEPS}).json()

    for field in ("image", "last_image"):
        mine = api.get(f"/api/v1/{field}/{body['job_id']}?user_id=alice")
        theirs = api.get(f"/api/v1/{field}/{body['job_id']}?user_id=bob")
        missing = api.get(f"/api/v1/{field}/00000000-0000-0000-0000-000000000000?user_id=alice")
        assert mine.status_code == 200
        assert (theirs.status_code, theirs.json()) == (missing.status_code, missing.json()) == (
            404, {"detail": "No such job."}
        )


def test_a_job_without_a_last_image_answers_404_for_it(submit, api):
    body = submit({"user_id": "alice", "prompt": "a cat", "model": I2V, "image": data_uri(png()), **STEPS}).json()

    response = api.get(f"/api/v1/last_image/{body['job_id']}?user_id=alice")

    assert response.status_code == 404
    assert response.json()["detail"] == "This job has no last_image."


def test_delete_removes_the_inputs_with_the_job(submit, api):
    body = submit({"user_id": "alice", "prompt": "a cat", "model": FLF, "image": data_uri(png()),
                   "last_image": data_uri(png(seed=3)), "width": 64, "height": 64, **STEPS}).json()
    job = VideoGenerationJob.objects.get()
    names = [job.image.name, job.last_image.name]
    assert all(default_storage.exists(name) for name in names)

    assert api.delete(f"/api/v1/job/{body['job_id']}?user_id=alice").status_code == 204

    assert not any(default_storage.exists(name) for name in names)


def test_retention_removes_the_inputs_and_their_links(submit, api, settings):
    from django.utils import timezone

    from jobs.services.retention import expire_outputs

    settings.VIDEOGEN_RETENTION_DAYS = 1
    body = submit({"user_id": "alice", "prompt": "a cat", "model": I2V, "image": data_uri(png()), **STEPS}).json()
    job = VideoGenerationJob.objects.get()
    VideoGenerationJob.objects.filter(pk=job.pk).update(
        status=Status.FAILED, completed_at=timezone.now() - timezone.timedelta(days=2)
    )

    [expired] = expire_outputs()

    assert not default_storage.exists(job.image.name)
    status = api.get(f"/api/v1/job/{body['job_id']}?user_id=alice").json()
    assert status["image_url"] is None
    assert api.get(f"/api/v1/image/{body['job_id']}?user_id=alice").status_code == 410


def test_a_failed_jobs_inputs_stay_for_a_rerun(submit):
    submit({"user_id": "alice", "prompt": "a cat", "model": I2V, "image": data_uri(png()), **STEPS})
    job = VideoGenerationJob.objects.get()
    job.transition(Status.RUNNING, from_={Status.PENDING})
    job.fail("internal", "boom", from_={Status.RUNNING})

    from jobs.services.lifecycle import job_rerun

    assert job_rerun(job)
    job.refresh_from_db()
    assert (job.status, job.mode) == (Status.PENDING, Mode.IMAGE_TO_VIDEO)
    assert default_storage.exists(job.image.name)


# --- Extend.


@pytest.fixture
def source(make_completed_job):
    return make_completed_job(model_name=I2V, width=64, height=64, num_frames=9, fps=8)


def test_an_extend_takes_the_source_videos_size_and_frame_rate(submit, source):
    response = submit({"user_id": "alice", "prompt": "on and on", "extend_job_id": str(source.id),
                       "num_frames": 8, "num_inference_steps": 2})

    assert response.status_code == 202, response.json()
    body = response.json()
    assert (body["mode"], body["extend_job_id"], body["model"]) == ("extend", str(source.id), I2V)
    assert (body["width"], body["height"], body["fps"]) == (64, 64, 8)
    assert body["image_url"] is None


@pytest.mark.parametrize("owner", ["bob", None], ids=["another-users", "missing"])
def test_an_extend_of_another_users_or_a_missing_job_is_the_same_400(submit, source, owner):
    if owner is None:
        target = "00000000-0000-0000-0000-000000000000"
    else:
        VideoGenerationJob.objects.filter(pk=source.pk).update(user_id=owner)
        target = str(source.id)

    response = submit({"user_id": "alice", "prompt": "more", "extend_job_id": target})

    assert response.status_code == 400
    assert response.json()["errors"] == {"extend_job_id": ["No such job of this user_id."]}


def test_an_extend_of_a_job_not_yet_completed_is_a_409(submit, make_job):
    running = make_job(status=Status.RUNNING)

    response = submit({"user_id": "alice", "prompt": "more", "extend_job_id": str(running.id)})

    assert response.status_code == 409
    assert response.json()["status"] == "running"


def test_an_extend_with_another_frame_rate_or_an_image_is_a_400(submit, source):
    other_fps = submit({"user_id": "alice", "prompt": "more", "extend_job_id": str(source.id), "fps": 24})
    with_image = submit({"user_id": "alice", "prompt": "more", "extend_job_id": str(source.id),
                         "image": data_uri(png())})

    assert other_fps.status_code == 400 and "fps" in other_fps.json()["errors"]
    assert with_image.status_code == 400 and "image" in with_image.json()["errors"]
    assert VideoGenerationJob.objects.count() == 1
