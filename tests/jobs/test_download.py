import pytest

from jobs.models import Status


def body_of(response) -> bytes:
    return b"".join(response.streaming_content)


def test_a_completed_video_downloads_as_mp4(api, make_completed_job, media_root):
    job = make_completed_job()

    response = api.get(f"/api/v1/download/{job.id}?user_id=alice")

    assert response.status_code == 200
    assert response["Content-Type"] == "video/mp4"
    assert response["Accept-Ranges"] == "bytes"
    assert body_of(response) == (media_root / job.video.name).read_bytes()


def test_a_range_request_gets_206_and_just_those_bytes(api, make_completed_job, media_root):
    job = make_completed_job()
    data = (media_root / job.video.name).read_bytes()

    response = api.get(f"/api/v1/download/{job.id}", HTTP_RANGE="bytes=10-19")

    assert response.status_code == 206
    assert response["Content-Range"] == f"bytes 10-19/{len(data)}"
    assert response["Content-Length"] == "10"
    assert body_of(response) == data[10:20]


@pytest.mark.parametrize(
    "header, start, end",
    [("bytes=-5", -5, None), ("bytes=100-", 100, None), ("bytes=0-999999999", 0, None)],
)
def test_open_and_suffix_ranges(api, make_completed_job, media_root, header, start, end):
    job = make_completed_job()
    data = (media_root / job.video.name).read_bytes()

    response = api.get(f"/api/v1/download/{job.id}", HTTP_RANGE=header)

    assert response.status_code == 206
    assert body_of(response) == data[start:end]


def test_a_range_past_the_end_is_a_416(api, make_completed_job):
    job = make_completed_job()

    response = api.get(f"/api/v1/download/{job.id}", HTTP_RANGE="bytes=999999999-")

    assert response.status_code == 416
    assert response["Content-Range"].startswith("bytes */")


def test_a_malformed_range_gets_the_whole_file(api, make_completed_job):
    job = make_completed_job()

    response = api.get(f"/api/v1/download/{job.id}", HTTP_RANGE="lines=1-2")

    assert response.status_code == 200


@pytest.mark.parametrize("status", [Status.PENDING, Status.RUNNING, Status.FAILED, Status.CANCELLED])
def test_an_unfinished_job_is_a_409_that_says_why(api, make_job, status):
    job = make_job(status=status)

    response = api.get(f"/api/v1/download/{job.id}")

    assert response.status_code == 409
    body = response.json()
    assert body["status"] == status
    assert f"The job is {status}" in body["detail"]


def test_another_users_video_is_a_404(api, make_completed_job):
    job = make_completed_job(user_id="bob")

    response = api.get(f"/api/v1/download/{job.id}?user_id=alice")

    assert response.status_code == 404
    assert response.json() == {"detail": "No such job."}


def test_a_video_whose_file_is_gone_is_a_410(api, make_completed_job, media_root):
    job = make_completed_job()
    (media_root / job.video.name).unlink()

    response = api.get(f"/api/v1/download/{job.id}")

    assert response.status_code == 410


def test_the_poster_downloads_as_jpeg(api, make_completed_job):
    job = make_completed_job()

    response = api.get(f"/api/v1/poster/{job.id}?user_id=alice")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    assert body_of(response)[:3] == b"\xff\xd8\xff"


def test_another_users_poster_is_a_404(api, make_completed_job):
    job = make_completed_job(user_id="bob")

    assert api.get(f"/api/v1/poster/{job.id}?user_id=alice").status_code == 404


def test_a_completed_job_that_never_had_a_preview_is_a_410_not_an_error(api, make_completed_job):
    # Rows from before previews existed: make_completed_job stores no preview.
    job = make_completed_job()

    response = api.get(f"/api/v1/preview/{job.id}?user_id=alice")

    assert response.status_code == 410
    assert response.json() == {"detail": "This job has no such file: it was never stored.", "job_id": str(job.id)}
