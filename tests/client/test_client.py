"""
Client against a real server: gunicorn, a generation qcluster running the
tiny pipelines, and a webhook qcluster. Videos are decoded back from the
downloaded MP4s.
"""

import asyncio
import base64
import io
import re
import time
import uuid

import pytest
from PIL import Image

from jobs.models import VideoGenerationJob
from tests.support.jobs import FAST_JOB
from tests.support.proxy import breaking_proxy
from tests.support.decode import decode_mp4
from tests.support.images import FLF, I2V, png
from tests.support.receiver import SECRET

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def frames_of(path):
    return decode_mp4(path)[1]


def test_a_text_job_is_waited_for_with_progress_and_downloaded_as_the_frames_asked_for(client, tmp_path):
    from videogen_client import Job

    seen = []
    job = client.generate("a red fox in the snow", wait=True, on_progress=seen.append, **FAST_JOB)

    assert isinstance(job, Job) and job.status == "completed", job.error_message
    assert (job.num_frames, job.width, job.fps, job.mode) == (9, 64, 8, "text-to-video")
    assert job.completed_at is not None and job.completed_at.tzinfo is not None
    path = client.download(job.job_id, tmp_path)
    assert path == tmp_path / f"{job.job_id}.mp4"
    assert path.stat().st_size == job.file_size_bytes
    assert frames_of(path).shape == (9, 64, 64, 3)
    assert not list(tmp_path.glob("*.part"))
    # Every event handed to on_progress is one of the stream's, never the terminal one.
    assert {event.type for event in seen} <= {"status", "queue", "progress"}


def test_generate_with_wait_returns_the_finished_job_without_a_progress_callback(client):
    job = client.generate("a calm lake", wait=True, **FAST_JOB)

    assert job.status == "completed" and job.video_url.endswith(f"/api/v1/download/{job.job_id}")
    assert client.job(job.job_id).file_size_bytes == job.file_size_bytes > 0


def test_wait_polls_get_job_where_there_is_no_event_stream_and_reports_steps(client):
    # What wait() does on a server without GET /job/{id}/events (or where it answered 404).
    client._events_supported = False
    client.poll_interval = 0.2
    job = client.generate("a slow river", width=64, height=64, num_frames=9, num_inference_steps=30, fps=8)
    seen = []

    finished = client.wait(job.job_id, timeout=120, on_progress=seen.append)

    assert finished.status == "completed"
    assert seen[0].type == "status"
    steps = [event.current_step for event in seen if event.type == "progress"]
    assert steps == sorted(steps) and all(0 < step <= 30 for step in steps)
    assert all(event.total_steps == 30 for event in seen if event.type == "progress")


def test_wait_gives_up_after_its_timeout_with_the_last_state_seen(url):
    from videogen_client import Client, WaitTimeout

    with Client(url, user_id="alice") as client:
        client._events_supported = False
        # Seconds of work even on an idle box, so the half-second wait surely ends first.
        job = client.generate("a very long night", width=128, height=128, num_frames=97, num_inference_steps=200,
                              fps=8)
        try:
            finished = client.wait(job.job_id, timeout=0.5)
        except WaitTimeout as raised:
            assert raised.job.job_id == job.job_id and not raised.job.finished
        else:
            pytest.fail(f"the wait returned the job {finished.status}: {finished.error_message!r} ({finished.message})")
        client.cancel(job.job_id)


def test_images_go_as_a_path_bytes_a_file_a_pil_image_or_a_data_uri(client, tmp_path):
    first, last = png(seed=1), png(seed=2)
    (tmp_path / "first.png").write_bytes(first)
    small = {"width": 64, "height": 64, "num_inference_steps": 2, "fps": 8}

    by_path = client.generate("a cat", image=tmp_path / "first.png", model=I2V, num_frames=5, image_fit="pad", **small)
    by_str_path = client.generate("a cat", image=str(tmp_path / "first.png"), model=I2V, num_frames=5, **small)
    by_file = client.generate("a cat", image=io.BytesIO(first), last_image=last, model=FLF, num_frames=5, **small)
    by_pil = client.generate("a cat", image=Image.open(io.BytesIO(first)), model=I2V, num_frames=5, **small)
    by_uri = client.generate("a cat", image="data:image/png;base64," + base64.b64encode(first).decode(), model=I2V,
                             num_frames=5, **small)

    assert by_path.mode == by_str_path.mode == by_pil.mode == by_uri.mode == "image-to-video"
    assert by_file.mode == "first-last-frame" and by_file.last_image_url is not None
    assert by_path.image_fit == "pad" and by_path.image_url.endswith(f"/api/v1/image/{by_path.job_id}")
    stored = VideoGenerationJob.objects.get(pk=by_path.job_id).inputs["image"]
    assert stored["sha256"] == VideoGenerationJob.objects.get(pk=by_uri.job_id).inputs["image"]["sha256"]
    finished = [client.wait(job.job_id, timeout=180) for job in (by_path, by_str_path, by_file, by_pil, by_uri)]
    assert [job.status for job in finished] == ["completed"] * 5, [job.error_message for job in finished]
    assert frames_of(client.download(by_file.job_id, tmp_path / "flf.mp4")).shape == (5, 64, 64, 3)

    extended = client.generate("the cat sits", extend_job_id=by_path.job_id, num_frames=4, num_inference_steps=2,
                               wait=True)
    assert (extended.status, extended.mode, extended.extend_job_id) == ("completed", "extend", by_path.job_id)
    assert frames_of(client.download(extended.job_id, tmp_path / "extended.mp4")).shape == (9, 64, 64, 3)


def test_a_partial_download_resumes_with_range_and_a_wrong_part_starts_again(client, server, tmp_path):
    job = client.generate("a lighthouse", wait=True, **FAST_JOB)
    whole = client.download(job.job_id, tmp_path / "whole.mp4").read_bytes()

    (tmp_path / "resumed.mp4.part").write_bytes(whole[: len(whole) // 2])
    assert client.download(job.job_id, tmp_path / "resumed.mp4").read_bytes() == whole
    assert re.search(rf'"GET /api/v1/download/{job.job_id}\?user_id=alice HTTP/1.1" 206', server.log.decode())

    # A .part longer than the file cannot be part of it: the server answers 416, the client starts over.
    (tmp_path / "longer.mp4.part").write_bytes(whole + b"junk")
    assert client.download(job.job_id, tmp_path / "longer.mp4").read_bytes() == whole
    assert not list(tmp_path.glob("*.part"))


def test_a_download_broken_off_midway_is_resumed_in_the_same_call(client, server, tmp_path):
    job = client.generate("a windmill", wait=True, **FAST_JOB)
    size = job.file_size_bytes
    cut_once = []

    def cut(number: int, answered: bytes, data: bytes) -> int | None:
        # The first answer carrying the video is cut once a third of the file has passed.
        whole = answered + data
        head = whole.find(b"Content-Type: video/mp4")
        if cut_once or head < 0 or whole.find(b"\r\n\r\n", head) < 0:
            return None
        cut_at = whole.index(b"\r\n\r\n", head) + 4 + size // 3
        if cut_at > len(whole):
            return None
        cut_once.append(number)
        return cut_at - len(answered)

    from videogen_client import Client

    with breaking_proxy(server.port, cut) as proxy, Client(proxy.url, user_id="alice", backoff=0.05) as flaky:
        path = flaky.download(job.job_id, tmp_path / "flaky.mp4")
    assert proxy.cuts == 1
    assert re.search(rb"(?i)\nrange: bytes=\d+-", b"".join(proxy.requests.values()))
    assert path.stat().st_size == size and frames_of(path).shape == (9, 64, 64, 3)


def test_videos_iterates_every_page_newest_first(client):
    jobs = [client.generate(f"scene {index}", wait=True, **FAST_JOB) for index in range(3)]

    listed = list(client.videos(page_size=1))

    assert [video.job_id for video in listed] == [job.job_id for job in reversed(jobs)]
    assert all(video.file_size > 0 and video.status == "completed" for video in listed)


def test_a_submit_whose_answer_is_lost_is_retried_and_makes_one_job(server, django_db_blocker):
    from videogen_client import Client

    # The first connection's answer never arrives: the client sends the submit again, with the same key.
    with breaking_proxy(server.port, lambda number, answered, data: 0 if number == 0 else None) as proxy:
        with Client(proxy.url, user_id="retrier", backoff=0.05) as client:
            job = client.generate("a lost answer", **FAST_JOB)
    assert proxy.cuts == 1
    keys = [re.search(rb"(?i)idempotency-key: (\S+)", request).group(1) for request in proxy.requests.values()]
    assert len(keys) == 2 and keys[0] == keys[1]
    assert list(VideoGenerationJob.objects.filter(user_id="retrier").values_list("id", flat=True)) == [
        uuid.UUID(job.job_id)
    ]


def test_models_are_typed_with_the_default_marked(client):
    models = client.models()

    assert models.default == "tiny-random"
    names = {model.name: model for model in models}
    assert set(names) == {"tiny-random", I2V, FLF}
    assert "image-to-video" in names[I2V].modes and names["tiny-random"].bounds["width"]["min"] >= 1


def test_a_webhook_from_the_server_verifies_and_a_tampered_one_does_not(client, receiver):
    from videogen_client import WebhookVerificationError, verify_webhook

    job = client.generate("a signed sunset", webhook_url=receiver.url + "/ok", webhook_events=["completed"], wait=True,
                          **FAST_JOB)
    delivery = receiver.wait_for(1)[0]

    payload = verify_webhook(delivery.raw, delivery.headers, SECRET)
    assert payload["type"] == "job.completed" and payload["data"]["job_id"] == job.job_id
    # Headers as a framework hands them over (any case) verify the same.
    assert verify_webhook(delivery.raw.decode(), {k.title(): v for k, v in delivery.headers.items()}, SECRET) == payload
    tampered = delivery.raw.replace(job.job_id.encode(), str(uuid.uuid4()).encode())
    wrong_secret = "whsec_" + base64.b64encode(b"not the server's secret").decode()
    stale = {**delivery.headers, "webhook-timestamp": str(int(time.time()) - 3600)}
    for body, headers, secret in ((tampered, delivery.headers, SECRET), (delivery.raw, delivery.headers, wrong_secret),
                                  (delivery.raw, stale, SECRET)):
        with pytest.raises(WebhookVerificationError):
            verify_webhook(body, headers, secret)


def test_the_async_client_does_what_the_client_does(url, tmp_path):
    from videogen_client import AsyncClient

    async def session():
        async with AsyncClient(url, user_id="bob") as client:
            seen = []
            job = await client.generate("an async owl", wait=True, on_progress=seen.append, **FAST_JOB)
            path = await client.download(job.job_id, tmp_path)
            videos = [video async for video in client.videos(page_size=1)]
            models = await client.models()
            await client.delete(job.job_id)
            return job, path, videos, models

    job, path, videos, models = asyncio.run(session())

    assert job.status == "completed"
    assert frames_of(path).shape == (9, 64, 64, 3)
    assert [video.job_id for video in videos] == [job.job_id]
    assert models.default == "tiny-random"
    assert not VideoGenerationJob.objects.filter(pk=job.job_id).exists()
