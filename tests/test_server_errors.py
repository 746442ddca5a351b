"""
Requests gunicorn refuses itself, before Django sees them (a request line or
a header over its limits, a Content-Length that is not one), answered as
every other answer under /api/ is: JSON with a `detail`, never gunicorn's
HTML page. A real gunicorn, spoken to with raw bytes.
"""

import json

import pytest

from tests.support.server import gunicorn

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("server-errors")
    with gunicorn(directory / "gunicorn.log", {"VIDEOGEN_DATA_DIR": str(directory)}, workers=1) as running:
        yield running


def answer(server, request: bytes) -> tuple[int, dict[str, str], bytes]:
    raw = server.raw(request)
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    return int(status_line.split(" ")[1]), headers, body


def get(path: str, headers: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + b"Connection: close\r\n\r\n"


def post(content_length: bytes) -> bytes:
    return (b"POST /api/v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + content_length + b"Connection: close\r\n\r\n{}")


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (get("/api/v1/job/" + "a" * 5000), 414),  # the request line over gunicorn's 4094 bytes
        (get("/api/v1/health", b"X-Big: " + b"b" * 10240 + b"\r\n"), 431),  # one 10 KB header
        (get("/api/v1/health", b"".join(b"X-%d: x\r\n" % n for n in range(120))), 431),  # over 100 headers
        (post(b"Content-Length: abc\r\n"), 400),
        (post(b"Content-Length: -2\r\n"), 400),
        (post(b"Content-Length: 2\r\nContent-Length: 3\r\n"), 400),
        (b"NOT A REQUEST\r\n\r\n", 400),
    ],
    ids=["request-line", "10-KB-header", "too-many-headers", "content-length-abc", "content-length-negative",
         "content-length-twice", "garbage"],
)
def test_a_request_gunicorn_refuses_is_answered_in_json(server, request_bytes, status):
    code, headers, body = answer(server, request_bytes)

    assert code == status, body[:300]
    assert headers["content-type"] == "application/json", body[:300]
    assert int(headers["content-length"]) == len(body)
    detail = json.loads(body)["detail"]
    assert isinstance(detail, str) and 0 < len(detail) <= 300, detail


def test_requests_within_the_limits_still_reach_django(server):
    code, headers, body = answer(server, get("/api/v1/job/" + "a" * 3000, b"X-Big: " + b"b" * 8000 + b"\r\n"))

    assert code == 404 and json.loads(body) == {"detail": "No such job."}
