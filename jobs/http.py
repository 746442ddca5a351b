"""HTTP helpers the API needs and Django lacks: Range requests, JSON errors."""

import re

from django.db import InterfaceError, OperationalError
from django.http import FileResponse, HttpResponse, JsonResponse, StreamingHttpResponse

# What an unreachable or restarting database raises; answered with a 503.
# (Other database errors, an IntegrityError say, are bugs: a 500.)
DATABASE_DOWN = (OperationalError, InterfaceError)

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
CHUNK_SIZE = 64 * 1024


def json_error(http_status: int, detail: str, **extra) -> JsonResponse:
    return JsonResponse({"detail": detail, **extra}, status=http_status)


def _iter_range(file, start: int, length: int):
    try:
        file.seek(start)
        remaining = length
        while remaining > 0:
            chunk = file.read(min(CHUNK_SIZE, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk
    finally:
        file.close()


def ranged_file_response(request, file, *, size: int, content_type: str, filename: str) -> HttpResponse:
    """
    Stream file, honouring a single-range `Range: bytes=a-b` header (206) so
    browsers can seek in a video. Multiple ranges are answered with the whole
    file, which RFC 9110 allows; an unsatisfiable range gets 416.
    """
    header = request.headers.get("Range", "").strip()
    match = _RANGE.match(header) if header else None
    if match is None or (match.group(1) == "" and match.group(2) == ""):
        response = FileResponse(file, content_type=content_type, filename=filename)
        response["Accept-Ranges"] = "bytes"
        response["Content-Length"] = str(size)
        return response

    first, last = match.groups()
    if first == "":
        # bytes=-N: the last N bytes.
        suffix = int(last)
        start, end = max(size - suffix, 0), size - 1
        if suffix == 0:
            start = size
    else:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        file.close()
        response = json_error(416, f"Range {header!r} is outside the file's {size} bytes.")
        response["Content-Range"] = f"bytes */{size}"
        return response

    length = end - start + 1
    response = StreamingHttpResponse(_iter_range(file, start, length), status=206, content_type=content_type)
    response["Content-Range"] = f"bytes {start}-{end}/{size}"
    response["Content-Length"] = str(length)
    response["Accept-Ranges"] = "bytes"
    response["Content-Disposition"] = f'inline; filename="{filename}"'
    return response
