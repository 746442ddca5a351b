"""
A submit's images (`image`, `last_image`): read from a multipart file part,
a `data:image/...;base64,` URI or an `https://` URL, accepted only once
Pillow has decoded them whole (generation.images), and stored through the
jobs' storage as the client sent them, named by nothing a client can guess.
The worker fits them to the job's size (generation.images.prepare_image).

A URL is fetched here, at submit, never in a worker: only public addresses
(the address connected to is checked, not just the name), at most
MAX_REDIRECTS redirects, each checked again, within
VIDEOGEN_IMAGE_FETCH_TIMEOUT seconds in all, and never more than
VIDEOGEN_MAX_IMAGE_BYTES read. VIDEOGEN_IMAGE_ALLOWED_HOSTS are the
exceptions, as VIDEOGEN_WEBHOOK_ALLOWED_HOSTS are for webhooks.
"""

import binascii
import hashlib
import io
import http.client
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from rest_framework import serializers

from generation.images import BufferReader, ImageError, decode_image
from jobs.api.exceptions import ApiError
from jobs.services.files import delete_files
from jobs.services.outbound import RefusedURL, check_public_url, connect_checked

IMAGE_FIELDS = ("image", "last_image")
MAX_REDIRECTS = 3
READ_CHUNK = 64 * 1024
# Base64 is decoded this many characters at a time, so the client's string is never copied whole.
BASE64_CHUNK = 4 * 16 * 1024
EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}
CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


@dataclass(frozen=True)
class ImageInput:
    """One checked input image: its bytes as sent, and what decoding them found."""

    data: bytes | bytearray
    format: str
    width: int
    height: int
    sha256: str

    def info(self) -> dict:
        """What the job records of it (its `inputs` column): enough to show and to verify it."""
        return {
            "sha256": self.sha256,
            "format": self.format,
            "width": self.width,
            "height": self.height,
            "bytes": len(self.data),
        }


def too_large(field: str, size: int | None = None) -> ApiError:
    limit = settings.VIDEOGEN_MAX_IMAGE_BYTES
    told = f"is {size} bytes" if size is not None else "is larger than that"
    message = f"{field} {told}; the limit is {limit} bytes (VIDEOGEN_MAX_IMAGE_BYTES)."
    return ApiError(413, message, errors={field: [message]})


def read_image(field: str, value) -> ImageInput:
    """
    The image a request gave for `field`: an uploaded file, a data: URI or
    an https:// URL. ValidationError (a 400 naming the field) for anything
    that is not a whole PNG, JPEG or WebP within the limits, ApiError 413
    for one over VIDEOGEN_MAX_IMAGE_BYTES.
    """
    if isinstance(value, UploadedFile):
        data = _read_upload(field, value)
    elif isinstance(value, str):
        if value.startswith("data:"):
            data = _decode_data_uri(field, value)
        else:
            data = fetch_image(field, value)
    else:
        raise serializers.ValidationError(
            "Give an image: a file part (multipart/form-data), a data:image/...;base64, URI or an https:// URL."
        )
    if not data:
        raise serializers.ValidationError("The image is empty.")
    try:
        decoded = decode_image(data, max_pixels=settings.VIDEOGEN_MAX_IMAGE_PIXELS)
    except ImageError as exc:
        raise serializers.ValidationError(f"Not an accepted image: {exc}.")
    return ImageInput(
        data=data,
        format=decoded.format,
        width=decoded.width,
        height=decoded.height,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _read_upload(field: str, upload: UploadedFile) -> bytes:
    if upload.size is not None and upload.size > settings.VIDEOGEN_MAX_IMAGE_BYTES:
        raise too_large(field, upload.size)
    upload.seek(0)
    return upload.read()


def _decode_data_uri(field: str, value: str) -> bytearray:
    header, comma, payload_start = value.partition(",")
    if not comma or not header.startswith("data:image/") or not header.endswith(";base64"):
        raise serializers.ValidationError("A data URI must look like data:image/png;base64,<base64>.")
    start = len(header) + 1
    length = len(value) - start
    if length % 4:
        raise serializers.ValidationError("The data URI's base64 is broken: its length is not a multiple of 4.")
    padding = value.endswith("==") + value.endswith("=")
    size = length // 4 * 3 - padding
    if size > settings.VIDEOGEN_MAX_IMAGE_BYTES:
        raise too_large(field, size)
    # Filled in place, chunk by chunk: the one copy of the image this request makes.
    decoded = bytearray(size)
    position = 0
    try:
        for offset in range(start, len(value), BASE64_CHUNK):
            chunk = binascii.a2b_base64(value[offset : offset + BASE64_CHUNK], strict_mode=True)
            decoded[position : position + len(chunk)] = chunk
            position += len(chunk)
    except (binascii.Error, ValueError):
        raise serializers.ValidationError("The data URI's base64 is broken.")
    if position != size:
        raise serializers.ValidationError("The data URI's base64 is broken.")
    return decoded


def fetch_image(field: str, url: str) -> bytearray:
    """GET the image at url, following at most MAX_REDIRECTS redirects, each to a checked address."""
    deadline = time.monotonic() + settings.VIDEOGEN_IMAGE_FETCH_TIMEOUT
    allowed = settings.VIDEOGEN_IMAGE_ALLOWED_HOSTS
    for _ in range(MAX_REDIRECTS + 1):
        try:
            check_public_url(url, allowed_hosts=allowed, setting="VIDEOGEN_IMAGE_ALLOWED_HOSTS")
            status, location, data = _get(field, url, deadline, allowed)
        except RefusedURL as exc:
            raise serializers.ValidationError(f"The image URL is refused: {exc}")
        except TimeoutError:
            raise serializers.ValidationError(
                f"Fetching the image URL took longer than {settings.VIDEOGEN_IMAGE_FETCH_TIMEOUT:g} seconds."
            )
        except (OSError, http.client.HTTPException) as exc:
            raise serializers.ValidationError(f"The image URL could not be fetched ({exc.__class__.__name__}).")
        if location is None:
            if status != 200:
                raise serializers.ValidationError(f"Fetching the image URL answered HTTP {status}, not 200.")
            return data
        url = urljoin(url, location)
    raise serializers.ValidationError(f"The image URL redirected more than {MAX_REDIRECTS} times.")


def _get(field: str, url: str, deadline: float, allowed: list[str]) -> tuple[int, str | None, bytearray]:
    """One GET: (status, the redirect's Location or None, the body of a 200)."""
    parts = urlsplit(url)
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    sock = connect_checked(parts.hostname, port, remaining, allowed_hosts=allowed)
    connection_class = http.client.HTTPSConnection if https else http.client.HTTPConnection
    connection = connection_class(parts.hostname, port, timeout=remaining)
    try:
        # Certificates are checked against the host name; the socket is the checked address.
        connection.sock = connection._context.wrap_socket(sock, server_hostname=parts.hostname) if https else sock
        # http.client lets go of connection.sock once the response is read to its end; the body's reads still use it.
        body_socket = connection.sock
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request(
            "GET", path, headers={"User-Agent": "videogen-image-fetch", "Accept": "image/png, image/jpeg, image/webp"}
        )
        response = connection.getresponse()
        if response.status in (301, 302, 303, 307, 308):
            location = response.getheader("Location")
            if not location:
                raise serializers.ValidationError("The image URL redirected without a Location.")
            return response.status, location, bytearray()
        if response.status != 200:
            return response.status, None, bytearray()
        limit = settings.VIDEOGEN_MAX_IMAGE_BYTES
        declared = response.getheader("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large(field, int(declared))
        body = bytearray()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            body_socket.settimeout(remaining)
            chunk = response.read1(READ_CHUNK)
            if not chunk:
                return 200, None, body
            body += chunk
            if len(body) > limit:
                raise too_large(field)
    finally:
        connection.close()


def store_images(images: dict[str, ImageInput]) -> dict[str, str]:
    """Store each image under inputs/ and return the stored names by field; on failure none is left."""
    stored: dict[str, str] = {}
    try:
        for field, image in images.items():
            name = f"inputs/{secrets.token_hex(16)}.{EXTENSIONS[image.format]}"
            stored[field] = default_storage.save(name, File(io.BufferedReader(BufferReader(image.data)), name=name))
    except BaseException:
        delete_files(list(stored.values()))
        raise
    return stored
