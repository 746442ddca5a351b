"""HTTP helpers the API needs and Django lacks: Range and conditional requests, quick JSON negotiation."""

import re

from django.http import FileResponse, HttpResponse, StreamingHttpResponse
from django.utils.cache import get_conditional_response
from django.utils.http import http_date, parse_http_date_safe
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import JSONRenderer

from jobs.api.exceptions import ApiError
from jobs.services.files import LocalFile, S3Object

# RFC 9110 section 14.1.2, one range only: `bytes=first-last`, `bytes=first-`
# or `bytes=-suffix`. ASCII digits only (\d would take any script's digits).
_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)", re.IGNORECASE | re.ASCII)
# A position with more digits than this is past the end of any stored file;
# it is never converted (int() of thousands of digits raises).
_MAX_DIGITS = 18
_BEYOND_ANY_FILE = 10**_MAX_DIGITS


class JsonFirstNegotiation(DefaultContentNegotiation):
    """
    DRF's content negotiation, with its answer for what nearly every request
    sends (no Accept, */*, or application/json, and no ?format=) given
    without parsing: the first renderer, JSON. Parsing cost a status poll
    more than rendering its body did. Anything else (Accept: video/mp4 on
    /download, text/html for a 406) goes through DRF's own path.
    """

    ANYTHING = frozenset({"*/*", "application/json"})

    def select_renderer(self, request, renderers, format_suffix=None):
        first = renderers[0]
        if (
            format_suffix is None
            and request.META.get("HTTP_ACCEPT", "*/*") in self.ANYTHING
            and self.settings.URL_FORMAT_OVERRIDE not in request.GET
            and first.media_type == "application/json"
        ):
            return first, first.media_type
        return super().select_renderer(request, renderers, format_suffix)


class JsonOptionsNegotiation(JsonFirstNegotiation):
    """
    For drf-spectacular's /schema and /docs: their own renderers (YAML, the
    docs' HTML template) for what they serve, JSON for an OPTIONS answer
    (DRF's metadata, which the docs' template cannot render). Their errors
    are JSON already: every API error is (jobs.api.exceptions.error_response).
    """

    def select_renderer(self, request, renderers, format_suffix=None):
        selected = super().select_renderer(request, renderers, format_suffix)
        if request.method == "OPTIONS":
            return JSONRenderer(), JSONRenderer.media_type
        return selected


def _position(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return _BEYOND_ANY_FILE if len(digits) > _MAX_DIGITS else int(digits)


def requested_range(header: str, size: int) -> tuple[int, int] | None | bool:
    """
    The Range header as (start, end) inclusive; None to send the whole file
    (no header, several ranges, or one that does not parse: RFC 9110 lets a
    server ignore those); False when it cannot be satisfied (a 416).
    """
    match = _RANGE.fullmatch(header.strip(" \t"))
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":
        # bytes=-N: the last N bytes.
        suffix = _position(last)
        if suffix == 0 or size == 0:
            return False
        return max(size - suffix, 0), size - 1
    start = _position(first)
    end = min(_position(last), size - 1) if last else size - 1
    if start >= size or start > end:
        return False
    return start, end


def _if_range_holds(request, etag: str, last_modified: str) -> bool:
    """RFC 9110 section 13.1.5: a Range is honoured only for the representation the client has."""
    value = request.headers.get("If-Range")
    if value is None:
        return True
    value = value.strip()
    if value.startswith('"'):
        # A strong comparison: a weak entity tag never matches.
        return value == etag
    if value.startswith("W/"):
        return False
    date = parse_http_date_safe(value)
    return date is not None and http_date(date) == last_modified


def file_response(request, file: LocalFile | S3Object, *, content_type: str, filename: str) -> HttpResponse:
    """
    Send a stored file, with ETag and Last-Modified. Conditional requests get
    304 (If-None-Match, If-Modified-Since) or 412 (If-Match,
    If-Unmodified-Since); a single `Range` gets 206 so browsers can seek,
    unless If-Range names another version (then the whole file). Several
    ranges get the whole file, which RFC 9110 allows; an unsatisfiable range
    gets 416. The 412 and the 416 are raised, like every API error.
    """
    validators = {"ETag": file.etag, "Last-Modified": http_date(file.last_modified.timestamp())}
    conditional = get_conditional_response(
        request,
        etag=file.etag,
        last_modified=int(file.last_modified.timestamp()),
        response=HttpResponse(headers=validators),
    )
    if conditional.status_code == 304:
        file.close()
        return conditional
    if conditional.status_code == 412:
        file.close()
        raise ApiError(412, "A precondition (If-Match or If-Unmodified-Since) does not hold for this file.")

    header = request.headers.get("Range", "")
    byte_range = None
    if header and _if_range_holds(request, file.etag, validators["Last-Modified"]):
        byte_range = requested_range(header, file.size)
    if byte_range is False:
        file.close()
        raise ApiError(
            416, f"Range {header!r} is outside the file's {file.size} bytes.", headers={"Content-Range": f"bytes */{file.size}"}
        )

    if byte_range is None and isinstance(file, LocalFile):
        response = FileResponse(file.file, content_type=content_type, filename=filename)
        response["Accept-Ranges"] = "bytes"
        response["Content-Length"] = str(file.size)
    else:
        start, end = byte_range or (0, file.size - 1)
        length = end - start + 1
        response = StreamingHttpResponse(
            file.read_range(start, length), status=206 if byte_range else 200, content_type=content_type
        )
        if byte_range:
            response["Content-Range"] = f"bytes {start}-{end}/{file.size}"
        response["Content-Length"] = str(length)
        response["Accept-Ranges"] = "bytes"
        response["Content-Disposition"] = f'inline; filename="{filename}"'
    for name, value in validators.items():
        response[name] = value
    return response
