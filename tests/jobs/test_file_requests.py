"""
The file endpoints under hostile and picky clients: content negotiation,
validators and conditional requests, and Range headers of every shape
(Hypothesis). Never a 500; errors are JSON.
"""

import math
import re
import subprocess
import sys

import pytest
from django.utils.http import http_date
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.api.http import requested_range

ENDPOINTS = [("download", "video/mp4", "video"), ("poster", "image/jpeg", "poster")]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def body_of(response) -> bytes:
    return b"".join(response.streaming_content)


@pytest.fixture
def job(make_completed_job):
    return make_completed_job()


@pytest.fixture
def video(job, media_root) -> bytes:
    return (media_root / job.video.name).read_bytes()


# --- Accept.


@pytest.mark.parametrize("endpoint, content_type, _", ENDPOINTS)
@pytest.mark.parametrize("accept", ["{type}", "{major}/*", "{type};q=0.9, application/json;q=0.1",
                                    "text/html, {type}", "*/*", "application/json", ""])
def test_asking_for_the_files_own_type_or_json_gets_the_file(api, job, endpoint, content_type, _, accept):
    header = accept.format(type=content_type, major=content_type.split("/")[0])

    response = api.get(f"/api/v1/{endpoint}/{job.id}?user_id=alice", **({"HTTP_ACCEPT": header} if header else {}))

    assert response.status_code == 200
    assert response["Content-Type"] == content_type


def test_the_preview_is_served_to_accept_image_webp(api, make_completed_job, media_root):
    from generation.encoding import write_preview
    from jobs.models import VideoGenerationJob
    from tests.support.jobs import gradient_frames

    job = make_completed_job()
    write_preview(gradient_frames(3, 32, 32), media_root / "posters" / f"{job.id}.webp", fps=8)
    VideoGenerationJob.objects.filter(pk=job.pk).update(preview=f"posters/{job.id}.webp")

    response = api.get(f"/api/v1/preview/{job.id}", HTTP_ACCEPT="image/webp")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/webp"
    assert body_of(response)[8:12] == b"WEBP"


@pytest.mark.parametrize("accept", ["text/html", "image/png", "video/webm", "application/xml"])
def test_a_type_the_endpoint_cannot_send_is_still_a_json_406(api, job, accept):
    response = api.get(f"/api/v1/download/{job.id}", HTTP_ACCEPT=accept)

    assert response.status_code == 406
    assert response.json() == {"detail": "Could not satisfy the request Accept header."}


def test_errors_are_json_even_to_a_client_that_asked_for_video(api, make_job, make_completed_job):
    pending = make_job()
    foreign = make_completed_job(user_id="bob")

    unfinished = api.get(f"/api/v1/download/{pending.id}", HTTP_ACCEPT="video/mp4")
    hidden = api.get(f"/api/v1/download/{foreign.id}?user_id=alice", HTTP_ACCEPT="video/mp4")

    assert unfinished.status_code == 409 and unfinished["Content-Type"] == "application/json"
    assert hidden.status_code == 404 and hidden.json() == {"detail": "No such job."}


@pytest.mark.slow
@FUZZ
@given(accept=st.text(st.characters(codec="latin-1", exclude_categories=["Cc"]), max_size=200))
def test_no_accept_header_is_a_500(api, job, accept):
    response = api.get(f"/api/v1/download/{job.id}", HTTP_ACCEPT=accept)

    assert response.status_code in (200, 406)
    if response.status_code == 406:
        assert response["Content-Type"] == "application/json"


# --- Validators and conditional requests.


@pytest.mark.parametrize("endpoint, _, field", ENDPOINTS)
def test_files_carry_an_etag_and_last_modified_that_stay_the_same(api, job, media_root, endpoint, _, field):
    first = api.get(f"/api/v1/{endpoint}/{job.id}")
    again = api.get(f"/api/v1/{endpoint}/{job.id}", HTTP_RANGE="bytes=0-3")

    path = media_root / getattr(job, field).name
    assert first["ETag"].startswith('"') and first["ETag"].endswith('"') and len(first["ETag"]) > 8
    assert first["Last-Modified"] == http_date(path.stat().st_mtime)
    assert again.status_code == 206
    assert (again["ETag"], again["Last-Modified"]) == (first["ETag"], first["Last-Modified"])


@pytest.mark.slow
def test_the_etag_is_the_same_in_another_process(api, job, media_root):
    # Workers and several API processes must agree, or caches and If-Range break.
    code = (
        "import sys; from django.conf import settings; settings.configure();"
        "from django.core.files.storage import FileSystemStorage; from jobs.services.files import LocalFile;"
        "print(LocalFile(FileSystemStorage(location=sys.argv[1]).open(sys.argv[2], 'rb'), sys.argv[2]).etag)"
    )
    other = subprocess.run([sys.executable, "-c", code, str(media_root), job.video.name],
                           capture_output=True, text=True, check=True)

    assert other.stdout.strip() == api.get(f"/api/v1/download/{job.id}")["ETag"]


def test_a_file_replaced_under_the_same_name_gets_a_new_etag(api, job, media_root):
    before = api.get(f"/api/v1/download/{job.id}")["ETag"]
    path = media_root / job.video.name
    path.write_bytes(path.read_bytes() + b"\0")

    assert api.get(f"/api/v1/download/{job.id}")["ETag"] != before


@pytest.mark.parametrize("match", ["{etag}", "W/{etag}", '"other", {etag}', "*"])
def test_if_none_match_with_the_current_etag_is_a_304_without_a_body(api, job, match):
    etag = api.get(f"/api/v1/download/{job.id}")["ETag"]

    response = api.get(f"/api/v1/download/{job.id}", HTTP_IF_NONE_MATCH=match.format(etag=etag))

    assert response.status_code == 304
    assert response.content == b""
    assert response["ETag"] == etag
    assert "Last-Modified" in response


@pytest.mark.parametrize("match", ['"other"', 'W/"other"', "garbage", '""'])
def test_if_none_match_with_another_etag_gets_the_file(api, job, video, match):
    response = api.get(f"/api/v1/download/{job.id}", HTTP_IF_NONE_MATCH=match)

    assert response.status_code == 200
    assert body_of(response) == video


def test_if_modified_since_answers_304_only_for_an_unchanged_file(api, job, video):
    last_modified = api.get(f"/api/v1/download/{job.id}")["Last-Modified"]

    assert api.get(f"/api/v1/download/{job.id}", HTTP_IF_MODIFIED_SINCE=last_modified).status_code == 304
    older = api.get(f"/api/v1/download/{job.id}", HTTP_IF_MODIFIED_SINCE="Sat, 01 Jan 2000 00:00:00 GMT")
    assert older.status_code == 200 and body_of(older) == video


def test_if_match_with_another_etag_is_a_json_412(api, job):
    response = api.get(f"/api/v1/download/{job.id}", HTTP_IF_MATCH='"other"')

    assert response.status_code == 412
    assert "precondition" in response.json()["detail"]


def test_another_users_file_is_a_404_whatever_the_validators(api, make_completed_job):
    job = make_completed_job(user_id="bob")
    etag = api.get(f"/api/v1/download/{job.id}?user_id=bob")["ETag"]

    response = api.get(f"/api/v1/download/{job.id}?user_id=alice", HTTP_IF_NONE_MATCH=etag)

    assert response.status_code == 404
    assert response.json() == {"detail": "No such job."}


# --- If-Range.


def test_if_range_with_the_current_etag_or_date_honours_the_range(api, job, video):
    first = api.get(f"/api/v1/download/{job.id}")

    for validator in (first["ETag"], first["Last-Modified"]):
        response = api.get(f"/api/v1/download/{job.id}", HTTP_RANGE="bytes=5-9", HTTP_IF_RANGE=validator)
        assert response.status_code == 206, validator
        assert body_of(response) == video[5:10]


@pytest.mark.parametrize("validator", ['"stale"', "W/{etag}", "Sat, 01 Jan 2000 00:00:00 GMT", "not a date", ""])
def test_a_stale_if_range_gets_the_whole_file(api, job, video, validator):
    etag = api.get(f"/api/v1/download/{job.id}")["ETag"]

    response = api.get(f"/api/v1/download/{job.id}", HTTP_RANGE="bytes=5-9",
                       HTTP_IF_RANGE=validator.format(etag=etag))

    assert response.status_code == 200
    assert body_of(response) == video


@pytest.mark.slow
@FUZZ
@given(validator=st.text(st.characters(codec="latin-1", exclude_categories=["Cc"]), max_size=100))
def test_no_if_range_value_is_a_500(api, job, video, validator):
    response = api.get(f"/api/v1/download/{job.id}", HTTP_RANGE="bytes=1-2", HTTP_IF_RANGE=validator)

    assert response.status_code in (200, 206)
    assert body_of(response) == (video[1:3] if response.status_code == 206 else video)


# --- Range.


def number(digits: str) -> float:
    digits = digits.lstrip("0") or "0"
    # int() refuses more than 4300 digits; such a number is past any file anyway.
    return int(digits) if len(digits) < 4000 else math.inf


def expected_range(header: str, size: int):
    """An independent reading of RFC 9110 for one `bytes=` range: (start, end), None (whole file) or False (416)."""
    match = re.fullmatch(r"[ \t]*bytes=([0-9]*)-([0-9]*)[ \t]*", header, re.IGNORECASE | re.ASCII)
    if not match or match.group(1) == match.group(2) == "":
        return None
    first, last = (number(group) if group else None for group in match.groups())
    if first is None:
        return (max(size - last, 0), size - 1) if last and size else False
    if first >= size or (last is not None and last < first):
        return False
    return first, size - 1 if last is None else min(last, size - 1)


digits = st.one_of(st.integers(0, 5000).map(str), st.integers(0, 10**40).map(str), st.just("9" * 5000),
                   st.builds(lambda zeros, n: "0" * zeros + str(n), st.integers(0, 3000), st.integers(0, 2000)))
range_headers = st.one_of(
    st.builds(lambda a, b: f"bytes={a}-{b}", digits | st.just(""), digits | st.just("")),
    st.builds(lambda a, b, c, d: f"bytes={a}-{b},{c}-{d}", digits, digits, digits, digits),
    st.sampled_from(["Bytes=0-1", " bytes=0-1 ", "bytes=١-٢", "bytes=0x10-0x20", "bytes=-", "bytes=1-2-3",
                     "lines=1-2", "bytes=--1", "bytes=+1-2", "bytes=1_000-2", "bytes 1-2", "bytes=²-³"]),
    st.text(st.characters(codec="latin-1", exclude_categories=["Cc"]), max_size=60),
)


@pytest.mark.slow
@FUZZ
@given(header=range_headers)
def test_every_range_header_gets_the_right_bytes_the_whole_file_or_a_json_416(api, job, video, header):
    response = api.get(f"/api/v1/download/{job.id}", HTTP_RANGE=header)

    expected = expected_range(header, len(video))
    if expected is None:
        assert response.status_code == 200
        assert body_of(response) == video
    elif expected is False:
        assert response.status_code == 416
        assert response["Content-Type"] == "application/json"
        assert response["Content-Range"] == f"bytes */{len(video)}"
    else:
        start, end = expected
        assert response.status_code == 206
        assert response["Content-Range"] == f"bytes {start}-{end}/{len(video)}"
        assert body_of(response) == video[start : end + 1]


@given(size=st.integers(0, 10**6), header=range_headers)
def test_range_parsing_agrees_with_the_rfc_for_any_file_size(size, header):
    assert requested_range(header, size) == expected_range(header, size)
