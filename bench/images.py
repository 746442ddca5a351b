"""
What an image costs a submit, in-process (straight through Django's WSGI
handler, as bench/handler.py does): POST /generate with a ~5 MiB PNG as a
multipart file part and as a data: URI in JSON, against a text submit in the
same run.

Per row: the median CPU time per request (the process's CPU clock), the
peak RSS a request adds (VmHWM reset before it through /proc/self/clear_refs),
and the peak of Python allocations during a request (tracemalloc) in copies
of the image's bytes, beside the same for the request parser alone (DRF's
parse of the body, before our code sees it). The goal: at most one copy of
the upload beyond the parser's.

    .venv/bin/python -m bench.images
    .venv/bin/python -m bench.images --requests 20 --megabytes 5
"""

import argparse
import base64
import io
import json
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

from bench.common import ROOT, bench_database, setup_django


def noise_png(megabytes: float) -> bytes:
    """Random pixels compress not at all, so the PNG is about side * side * 3 bytes."""
    import numpy as np
    from PIL import Image

    side = int((megabytes * 1024 * 1024 / 3) ** 0.5)
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def multipart(fields: dict, files: dict) -> tuple[bytes, str]:
    boundary = "videogen-bench-boundary"
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, data in files.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.png"\r\n'
            "Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def environ(body: bytes, content_type: str) -> dict:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/v1/generate",
        "QUERY_STRING": "",
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)),
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "HTTP_HOST": "127.0.0.1",
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def call(handler, body: bytes, content_type: str) -> int:
    statuses = []
    response = handler(environ(body, content_type), lambda status, headers: statuses.append(status))
    b"".join(response)
    response.close()
    return int(statuses[0].split()[0])


def measure(handler, body: bytes, content_type: str, requests: int) -> dict:
    # The first request of its kind in a fresh process, so the heap has not grown for it yet.
    Path("/proc/self/clear_refs").write_text("5")
    before = rss_kib("VmRSS")
    assert call(handler, body, content_type) == 202
    peak_rss = (rss_kib("VmHWM") - before) * 1024
    cpu = []
    for _ in range(requests):
        started = time.process_time()
        status = call(handler, body, content_type)
        cpu.append(time.process_time() - started)
        assert status == 202, status
    tracemalloc.start()
    call(handler, body, content_type)
    peak_python = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"cpu_ms": statistics.median(cpu) * 1000, "peak_rss": peak_rss, "peak_python": peak_python}


def parser_peak(body: bytes, content_type: str) -> int:
    """The peak of Python allocations while DRF parses the body alone, as a request's parse does."""
    from django.core.handlers.wsgi import WSGIRequest
    from rest_framework.request import Request

    from jobs.api.views import SubmitMultiPartParser
    from jobs.api.parsers import SafeJSONParser

    request = Request(WSGIRequest(environ(body, content_type)), parsers=[SafeJSONParser(), SubmitMultiPartParser()])
    tracemalloc.start()
    request.data
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


ROWS = ("text submit (JSON)", "image as a multipart part", "image as a data: URI (JSON)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10, help="timed requests per row")
    parser.add_argument("--megabytes", type=float, default=5.0, help="the image's size")
    parser.add_argument("--row", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row is None:
        # Each row in a process of its own: a heap grown by one row's requests would hide the next one's peak.
        print(f"{'row':32} {'CPU ms':>8} {'x text':>7} {'peak RSS MiB':>13} {'peak py MiB':>12} {'parser MiB':>11} "
              f"{'copies beyond parser':>21}")
        baseline = None
        for row in range(len(ROWS)):
            output = subprocess.run(
                [sys.executable, "-m", "bench.images", "--row", str(row), "--requests", str(args.requests),
                 "--megabytes", str(args.megabytes)],
                cwd=ROOT, capture_output=True, text=True, check=True,
            ).stdout
            figures = json.loads(output.strip().splitlines()[-1])
            baseline = baseline or figures["cpu_ms"]
            print(
                f"{ROWS[row]:32} {figures['cpu_ms']:8.1f} {figures['cpu_ms'] / baseline:7.1f} "
                f"{figures['peak_rss'] / 2**20:13.1f} {figures['peak_python'] / 2**20:12.1f} "
                f"{figures['parser'] / 2**20:11.1f} {figures['beyond']:21.2f}"
            )
        print(f"image: {args.megabytes:g} MiB PNG; {args.requests} timed requests per row, each row a fresh process")
        return

    setup_django(quiet=True, VIDEOGEN_AUTH="none", VIDEOGEN_MAX_ACTIVE_JOBS_PER_USER="1000000000")
    from django.core.handlers.wsgi import WSGIHandler

    with bench_database():
        print(json.dumps(measure_row(WSGIHandler(), args)))


def measure_row(handler, args) -> dict:
    """The figures of row args.row."""
    image = noise_png(args.megabytes)
    common = {"user_id": "alice", "prompt": "a cat", "num_inference_steps": 2, "num_frames": 9}
    text_body = json.dumps({**common, "model": "tiny-random"}).encode()
    uri_body = json.dumps(
        {**common, "model": "tiny-random-i2v", "image": "data:image/png;base64," + base64.b64encode(image).decode()}
    ).encode()
    form_body, form_type = multipart({**common, "model": "tiny-random-i2v"}, {"image": image})
    rows = [(text_body, "application/json"), (form_body, form_type), (uri_body, "application/json")]
    body, content_type = rows[args.row]
    # Warm: the code a submit runs, loaded on a small text submit first.
    assert call(handler, text_body, "application/json") == 202
    import generation.images  # noqa: F401
    figures = measure(handler, body, content_type, args.requests)
    figures["parser"] = parser_peak(body, content_type)
    figures["beyond"] = (figures["peak_python"] - figures["parser"]) / len(image)
    return figures


if __name__ == "__main__":
    main()
