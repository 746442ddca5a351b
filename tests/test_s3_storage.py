"""
S3-compatible storage, end to end against a real S3 server process (moto's,
tests/support/s3.py): a real qcluster stores into the bucket, the API redirects to
presigned URLs or streams the objects with Range, and nothing is left behind.
"""

import os
import re
import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from botocore.config import Config
from django.core.files.storage import default_storage, storages
from django.urls import reverse
from django.utils import timezone

from generation.encoding import encode_mp4, write_poster, write_preview
from generation.runner import StorageWriteError, _store_outputs
from jobs.models import Status, VideoGenerationJob
from tests.support.cluster import running_qcluster, wait_for, wait_until_finished
from tests.support.jobs import FAST_JOB, gradient_frames
from tests.support.decode import decode_mp4
from tests.support.s3 import bucket, s3_server, s3_storages  # noqa: F401 (fixtures)

# An S3 server process (moto's), a qcluster, or settings loaded in a fresh Python, in every test.
pytestmark = pytest.mark.slow


def body_of(response) -> bytes:
    return b"".join(response.streaming_content)


def follow(response) -> requests.Response:
    """What a browser does with the API's 302: fetch the presigned URL itself."""
    assert response.status_code == 302, response.content
    return requests.get(response["Location"], timeout=30)


@pytest.fixture
def make_stored_job(make_job, bucket, tmp_path):
    """A completed job whose video, poster and preview were saved into the bucket."""

    def make(**fields) -> VideoGenerationJob:
        job = make_job(status=Status.COMPLETED, progress=100, completed_at=timezone.now(), **fields)
        frames = gradient_frames(job.num_frames, job.height, job.width)
        names = []
        for path, folder in [
            (encode_mp4(frames, tmp_path / f"{job.id}.mp4", fps=job.fps), "videos"),
            (write_poster(frames[0], tmp_path / f"{job.id}.jpg"), "posters"),
            (write_preview(frames, tmp_path / f"{job.id}.webp", fps=job.fps), "previews"),
        ]:
            with open(path, "rb") as handle:
                names.append(default_storage.save(f"{folder}/{path.name}", handle))
        VideoGenerationJob.objects.filter(pk=job.pk).update(video=names[0], poster=names[1], preview=names[2])
        job.refresh_from_db()
        return job

    return make


# --- The whole path through a real cluster.


@pytest.mark.django_db(transaction=True)
def test_a_real_cluster_stores_into_the_bucket_and_the_api_redirects_to_it(api, bucket, tmp_path, media_root):
    submitted = []
    for user_id, seed in [("alice", 1), ("bob", 2)]:
        response = api.post("/api/v1/generate", {"user_id": user_id, "prompt": "a boat", "seed": seed, **FAST_JOB},
                            format="json")
        assert response.status_code == 202, response.content
        submitted.append((user_id, response.json()["job_id"]))
    jobs = list(VideoGenerationJob.objects.filter(pk__in=[job_id for _, job_id in submitted]))

    with running_qcluster(tmp_path / "qcluster.log", media_root, **bucket.env) as cluster:
        wait_until_finished(jobs, cluster)

    for user_id, job_id in submitted:
        job = VideoGenerationJob.objects.get(pk=job_id)
        assert job.status == Status.COMPLETED, (job.error_code, job.error_message, cluster.log[-3000:])
        video = follow(api.get(f"/api/v1/download/{job_id}?user_id={user_id}"))
        assert video.status_code == 200
        assert video.headers["Content-Type"] == "video/mp4"
        assert video.headers["Content-Disposition"] == f'inline; filename="{job_id}.mp4"'
        assert len(video.content) == job.file_size_bytes
        (tmp_path / "check.mp4").write_bytes(video.content)
        meta, frames = decode_mp4(tmp_path / "check.mp4")
        assert frames.shape == (FAST_JOB["num_frames"], FAST_JOB["height"], FAST_JOB["width"], 3)
        assert meta["fps"] == FAST_JOB["fps"]
        poster = follow(api.get(f"/api/v1/poster/{job_id}?user_id={user_id}"))
        assert poster.headers["Content-Type"] == "image/jpeg" and poster.content[:3] == b"\xff\xd8\xff"
        preview = follow(api.get(f"/api/v1/preview/{job_id}?user_id={user_id}"))
        assert preview.headers["Content-Type"] == "image/webp" and preview.content[8:12] == b"WEBP"
        # Seeking in the player: the presigned URL answers ranges itself.
        part = requests.get(api.get(f"/api/v1/download/{job_id}")["Location"], headers={"Range": "bytes=4-11"})
        assert part.status_code == 206 and part.content == video.content[4:12]
    # Exactly the three files of each job: no temporary or orphaned objects,
    # no unfinished multipart uploads, and nothing written to the local disk.
    assert bucket.keys() == sorted(
        f"{folder}/{job_id}.{ext}"
        for _, job_id in submitted
        for folder, ext in [("videos", "mp4"), ("posters", "jpg"), ("previews", "webp")]
    )
    assert bucket.multipart_uploads() == []
    assert not (media_root / "videos").exists()


@pytest.mark.django_db(transaction=True)
def test_a_job_cancelled_while_it_runs_leaves_nothing_in_the_bucket(api, bucket, tmp_path, media_root):
    response = api.post("/api/v1/generate", {"user_id": "alice", "prompt": "p", "seed": 3, **FAST_JOB,
                                             "width": 128, "height": 128, "num_inference_steps": 200}, format="json")
    job = VideoGenerationJob.objects.get(pk=response.json()["job_id"])

    with running_qcluster(tmp_path / "qcluster.log", media_root, **bucket.env) as cluster:
        wait_for(lambda: VideoGenerationJob.objects.filter(pk=job.pk, status=Status.RUNNING, progress__gt=0).exists(),
                 "the job to run", cluster)
        assert api.post(f"/api/v1/job/{job.pk}/cancel?user_id=alice").status_code == 200
        wait_until_finished([job], cluster)

    job.refresh_from_db()
    assert job.status == Status.CANCELLED
    # At a step boundary, long before its 200 steps were done.
    assert re.search(r"cancelled: stopped after step \d+ of 200", cluster.log), cluster.log[-3000:]
    assert bucket.keys() == []


# --- Storing: all three or nothing.


@pytest.mark.django_db
def test_a_failed_upload_removes_what_was_already_uploaded(make_job, bucket, monkeypatch):
    job = make_job()
    frames = gradient_frames(job.num_frames, job.height, job.width)
    s3 = storages["default"]
    real_save = s3.save
    saved = []

    def save_then_lose_the_connection(name, content, **kwargs):
        # The third upload fails as a network error would; the first two are real.
        if len(saved) == 2:
            from botocore.exceptions import EndpointConnectionError

            raise EndpointConnectionError(endpoint_url=bucket.server.endpoint_url)
        saved.append(real_save(name, content, **kwargs))
        return saved[-1]

    monkeypatch.setattr(s3, "save", save_then_lose_the_connection)

    with pytest.raises(StorageWriteError, match=f"could not store previews/{job.id}.webp"):
        _store_outputs(job, frames)

    assert saved == [f"videos/{job.id}.mp4", f"posters/{job.id}.jpg"]
    assert bucket.keys() == []


@pytest.mark.django_db
def test_a_second_run_of_a_job_never_overwrites_the_first_runs_objects(make_job, bucket):
    # django-storages overwrites by default; a late duplicate run that then
    # lost the race would delete the winner's video with its own.
    job = make_job()
    frames = gradient_frames(job.num_frames, job.height, job.width)

    first, _ = _store_outputs(job, frames)
    second, _ = _store_outputs(job, frames)

    assert first[0] == f"videos/{job.id}.mp4"
    assert second[0] != first[0] and second[0].startswith(f"videos/{job.id}_")
    assert bucket.keys() == sorted(first + second)


# --- Serving: redirect mode (the default on S3).


@pytest.mark.django_db
def test_the_redirect_is_a_presigned_url_that_expires_as_configured(api, make_stored_job, settings):
    settings.VIDEOGEN_S3_URL_EXPIRY = 120
    job = make_stored_job()

    response = api.get(f"/api/v1/download/{job.id}?user_id=alice")

    assert response.status_code == 302
    location = response["Location"]
    assert response.json() == {"url": location, "expires_in": 120}
    assert response["Cache-Control"] == "no-store"
    query = parse_qs(urlsplit(location).query)
    assert query["X-Amz-Expires"] == ["120"]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Signature"][0]
    assert urlsplit(location).path.endswith(f"/videos/{job.id}.mp4")


@pytest.mark.django_db
def test_presigned_urls_can_name_a_public_endpoint_other_than_the_workers(api, make_stored_job, bucket, settings):
    job = make_stored_job()
    configured = s3_storages(bucket)
    configured["presign"] = {**configured["presign"], "OPTIONS": {
        **configured["presign"]["OPTIONS"], "endpoint_url": "https://media.example.com"}}
    settings.STORAGES = configured

    location = api.get(f"/api/v1/download/{job.id}")["Location"]

    assert location.startswith(f"https://media.example.com/{bucket.name}/videos/{job.id}.mp4?")


@pytest.mark.django_db
@pytest.mark.parametrize("redirect", [True, False])
def test_another_users_file_on_s3_is_a_404_and_no_url(api, make_stored_job, settings, redirect):
    settings.VIDEOGEN_S3_REDIRECT = redirect
    job = make_stored_job(user_id="bob")

    for endpoint in ["download", "poster", "preview"]:
        response = api.get(f"/api/v1/{endpoint}/{job.id}?user_id=alice")
        assert response.status_code == 404
        assert response.json() == {"detail": "No such job."}
        assert "Location" not in response


@pytest.mark.django_db
@pytest.mark.parametrize("redirect", [True, False])
def test_a_missing_object_is_a_410(api, make_stored_job, bucket, settings, redirect):
    settings.VIDEOGEN_S3_REDIRECT = redirect
    job = make_stored_job()
    bucket.delete(job.video.name)

    response = api.get(f"/api/v1/download/{job.id}?user_id=alice")

    assert response.status_code == 410
    assert response.json()["detail"] == "The job completed but its file is no longer stored."


@pytest.mark.django_db
@pytest.mark.parametrize("redirect", [True, False])
def test_an_unreachable_bucket_is_a_503(api, make_stored_job, bucket, settings, redirect):
    job = make_stored_job()
    settings.VIDEOGEN_S3_REDIRECT = redirect
    # Nothing listens on port 9 of 127.0.0.1; no retries, so it fails at once.
    settings.STORAGES = s3_storages(bucket, endpoint_url="http://127.0.0.1:9",
                                    client_config=Config(retries={"max_attempts": 1}, connect_timeout=2))

    response = api.get(f"/api/v1/download/{job.id}")

    assert response.status_code == 503
    assert response.json() == {"detail": "The file storage is unavailable; try again shortly."}


# --- Serving: stream mode (VIDEOGEN_S3_REDIRECT=false).


@pytest.fixture
def streamed(settings):
    settings.VIDEOGEN_S3_REDIRECT = False


@pytest.mark.django_db
def test_streamed_from_s3_the_whole_video_comes_with_its_validators(api, make_stored_job, bucket, streamed):
    job = make_stored_job()
    data = bucket.get(job.video.name)
    head = bucket.server.client().head_object(Bucket=bucket.name, Key=job.video.name)

    response = api.get(f"/api/v1/download/{job.id}?user_id=alice")

    assert response.status_code == 200
    assert response["Content-Type"] == "video/mp4"
    assert response["Content-Length"] == str(len(data))
    assert response["Accept-Ranges"] == "bytes"
    assert response["Content-Disposition"] == f'inline; filename="{job.id}.mp4"'
    assert response["ETag"] == head["ETag"]
    assert body_of(response) == data
    # Stable: the object's own ETag, whichever process asks.
    assert api.get(f"/api/v1/download/{job.id}")["ETag"] == head["ETag"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "header, start, end",
    [("bytes=10-19", 10, 20), ("bytes=-5", -5, None), ("bytes=100-", 100, None), ("bytes=0-999999999", 0, None),
     ("bytes=0-" + "9" * 5000, 0, None), ("bytes=" + "0" * 3000 + "7-" + "0" * 3000 + "9", 7, 10)],
)
def test_streamed_from_s3_a_range_is_fetched_and_sent_as_206(api, make_stored_job, bucket, streamed,
                                                             header, start, end):
    job = make_stored_job()
    data = bucket.get(job.video.name)

    response = api.get(f"/api/v1/download/{job.id}", HTTP_RANGE=header)

    assert response.status_code == 206
    expected = data[start:end]
    assert body_of(response) == expected
    assert response["Content-Length"] == str(len(expected))
    first = start % len(data)
    assert response["Content-Range"] == f"bytes {first}-{first + len(expected) - 1}/{len(data)}"


@pytest.mark.django_db
def test_streamed_from_s3_conditional_requests_work_as_on_disk(api, make_stored_job, bucket, streamed):
    job = make_stored_job()
    data = bucket.get(job.poster.name)
    etag = api.get(f"/api/v1/poster/{job.id}")["ETag"]

    assert api.get(f"/api/v1/poster/{job.id}", HTTP_IF_NONE_MATCH=etag).status_code == 304
    assert api.get(f"/api/v1/poster/{job.id}", HTTP_RANGE="bytes=0-1", HTTP_IF_RANGE=etag).status_code == 206
    stale = api.get(f"/api/v1/poster/{job.id}", HTTP_RANGE="bytes=0-1", HTTP_IF_RANGE='"stale"')
    assert stale.status_code == 200 and body_of(stale) == data
    assert api.get(f"/api/v1/poster/{job.id}", HTTP_RANGE=f"bytes={len(data)}-").status_code == 416


# --- The admin's player.


@pytest.mark.django_db
@pytest.mark.parametrize("redirect", [True, False])
def test_the_admin_player_plays_a_video_stored_on_s3(admin_client, api, make_stored_job, bucket, settings,
                                                    tmp_path, redirect):
    settings.VIDEOGEN_S3_REDIRECT = redirect
    job = make_stored_job()

    html = admin_client.get(reverse("admin:jobs_videogenerationjob_change", args=[job.pk])).content.decode()
    src = re.search(r'<video id="job-video"[^>]* src="([^"]+)"', html).group(1)
    poster = re.search(r'<video id="job-video"[^>]* poster="([^"]+)"', html).group(1)

    # What the browser's <video> does: follow a redirect, then ask for ranges.
    response = admin_client.get(src, HTTP_RANGE="bytes=0-")
    if redirect:
        assert response.status_code == 302
        data = requests.get(response["Location"], headers={"Range": "bytes=0-"}, timeout=30).content
    else:
        assert response.status_code == 206
        data = body_of(response)
    (tmp_path / "played.mp4").write_bytes(data)
    _, frames = decode_mp4(tmp_path / "played.mp4")
    assert frames.shape == (job.num_frames, job.height, job.width, 3)
    poster_response = admin_client.get(poster)
    poster_bytes = follow(poster_response).content if redirect else body_of(poster_response)
    assert poster_bytes[:3] == b"\xff\xd8\xff"


# --- Settings.


def settings_in_a_fresh_process(**env) -> dict:
    code = (
        "import django, json; django.setup(); from django.conf import settings as s;"
        "print(json.dumps({'backend': s.STORAGES['default']['BACKEND'], 'options': s.STORAGES['default'].get('OPTIONS'),"
        " 'presign': s.STORAGES.get('presign'), 'redirect': s.VIDEOGEN_S3_REDIRECT,"
        " 'expiry': s.VIDEOGEN_S3_URL_EXPIRY}))"
    )
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "VIDEOGEN_S3"))}
    result = subprocess.run([sys.executable, "-c", code], env={**clean, "DJANGO_SETTINGS_MODULE": "videogen.settings",
                            **env}, capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    if result.returncode:
        return {"error": result.stderr}
    import json

    return json.loads(result.stdout.strip().splitlines()[-1])


def test_without_a_bucket_files_stay_on_local_disk():
    loaded = settings_in_a_fresh_process()

    assert loaded["backend"] == "django.core.files.storage.FileSystemStorage"
    assert loaded["redirect"] is False
    assert loaded["presign"] is None


def test_a_bucket_name_switches_to_s3_with_redirects_on():
    loaded = settings_in_a_fresh_process(AWS_STORAGE_BUCKET_NAME="videos", AWS_S3_ENDPOINT_URL="http://minio:9000",
                                         AWS_S3_REGION_NAME="eu-west-1", VIDEOGEN_S3_URL_EXPIRY="90")

    assert loaded["backend"] == "storages.backends.s3.S3Storage"
    assert loaded["redirect"] is True
    assert loaded["options"]["bucket_name"] == "videos"
    assert loaded["options"]["endpoint_url"] == "http://minio:9000"
    assert loaded["options"]["region_name"] == "eu-west-1"
    assert loaded["options"]["file_overwrite"] is False
    assert loaded["options"]["querystring_expire"] == 90
    assert loaded["presign"]["OPTIONS"]["endpoint_url"] == "http://minio:9000"


def test_streaming_and_a_public_endpoint_are_chosen_by_variables():
    loaded = settings_in_a_fresh_process(AWS_STORAGE_BUCKET_NAME="videos", AWS_S3_ENDPOINT_URL="http://minio:9000",
                                         VIDEOGEN_S3_REDIRECT="false",
                                         VIDEOGEN_S3_PUBLIC_ENDPOINT_URL="https://media.example.com")

    assert loaded["redirect"] is False
    assert loaded["options"]["endpoint_url"] == "http://minio:9000"
    assert loaded["presign"]["OPTIONS"]["endpoint_url"] == "https://media.example.com"


@pytest.mark.parametrize("expiry", ["0", "604801", "soon"])
def test_a_url_lifetime_out_of_bounds_stops_the_start(expiry):
    loaded = settings_in_a_fresh_process(AWS_STORAGE_BUCKET_NAME="videos", VIDEOGEN_S3_URL_EXPIRY=expiry)

    assert "ImproperlyConfigured" in loaded["error"] and "VIDEOGEN_S3_URL_EXPIRY" in loaded["error"]



# --- Delete and retention remove the objects too.


@pytest.mark.django_db
def test_deleting_a_job_removes_its_objects_from_the_bucket(api, make_stored_job, bucket):
    job = make_stored_job()
    other = make_stored_job()
    assert len(bucket.keys()) == 6

    assert api.delete(f"/api/v1/job/{job.id}?user_id=alice").status_code == 204

    assert sorted(bucket.keys()) == sorted(
        f"{folder}/{other.id}.{ext}" for folder, ext in [("videos", "mp4"), ("posters", "jpg"), ("previews", "webp")]
    )


@pytest.mark.django_db
def test_expiry_removes_the_objects_and_keeps_the_row(api, make_stored_job, bucket, settings):
    from datetime import timedelta

    from jobs.services.retention import expire_outputs

    settings.VIDEOGEN_RETENTION_DAYS = 1
    job = make_stored_job()
    VideoGenerationJob.objects.filter(pk=job.pk).update(completed_at=timezone.now() - timedelta(days=2))

    assert [expired.pk for expired in expire_outputs()] == [job.pk]

    assert bucket.keys() == []
    assert api.get(f"/api/v1/download/{job.id}?user_id=alice").status_code == 410


# --- Input images: stored in the bucket at submit, read by the worker, removed with the job.


@pytest.mark.django_db(transaction=True)
def test_an_image_job_keeps_its_input_in_the_bucket_and_the_worker_reads_it_there(api, bucket, tmp_path, media_root):
    import base64
    import io

    from PIL import Image

    image = io.BytesIO()
    Image.new("RGB", (96, 64), "teal").save(image, format="PNG")
    response = api.post(
        "/api/v1/generate",
        {"user_id": "alice", "prompt": "a boat", "model": "tiny-random-i2v", **FAST_JOB,
         "image": "data:image/png;base64," + base64.b64encode(image.getvalue()).decode()},
        format="json",
    )
    assert response.status_code == 202, response.content
    job = VideoGenerationJob.objects.get(pk=response.json()["job_id"])
    assert bucket.keys() == [job.image.name]

    with running_qcluster(tmp_path / "qcluster.log", media_root, **bucket.env) as cluster:
        wait_until_finished([job], cluster)

    job.refresh_from_db()
    assert job.status == Status.COMPLETED, (job.error_code, job.error_message, cluster.log[-3000:])
    sent = follow(api.get(f"/api/v1/image/{job.id}?user_id=alice"))
    assert (sent.headers["Content-Type"], sent.content) == ("image/png", image.getvalue())
    assert api.get(f"/api/v1/image/{job.id}?user_id=bob").status_code == 404
    assert len(bucket.keys()) == 4

    assert api.delete(f"/api/v1/job/{job.id}?user_id=alice").status_code == 204

    assert bucket.keys() == []
