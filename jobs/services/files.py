"""
A job's stored files (video, poster, preview) as the file views read them:
on local disk (FileSystemStorage) or in an S3-compatible bucket
(django-storages' S3Storage), both through Django's storage API.

Each opened file knows its size and its validators (a strong ETag and a
Last-Modified time, the same in every process that reads it) and reads any
byte range without loading the rest.
"""

import datetime
import hashlib
import os
import sys
import tempfile
from collections.abc import Iterator

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import Storage, default_storage, storages
from django.db.models.fields.files import FieldFile

CHUNK_SIZE = 64 * 1024


class Missing(Exception):
    """The job points at a file that is not in storage (removed, or never stored)."""


class StorageUnavailable(Exception):
    """The bucket could not be reached or refused the request."""


def is_s3(storage: Storage) -> bool:
    # __class__, unlike type(), makes Django's lazy default_storage build its
    # backend (importing its module). If django-storages' S3 module is still
    # not imported, this is no S3Storage: local deployments never import boto3.
    storage_class = storage.__class__
    module = sys.modules.get("storages.backends.s3")
    return module is not None and issubclass(storage_class, module.S3Storage)


def redirects_to_storage(stored: FieldFile) -> bool:
    """Whether the file views answer with a presigned URL rather than the bytes."""
    return settings.VIDEOGEN_S3_REDIRECT and is_s3(stored.storage)


class LocalFile:
    def __init__(self, file, name: str):
        self.file = file
        stat = os.fstat(file.fileno())
        self.size = stat.st_size
        # A stored file is never rewritten in place (a new run stores a new
        # name), so name, size and modification time identify its bytes.
        digest = hashlib.sha256(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()
        self.etag = f'"{digest[:32]}"'
        self.last_modified = datetime.datetime.fromtimestamp(stat.st_mtime, tz=datetime.UTC)

    def read_range(self, start: int, length: int) -> Iterator[bytes]:
        return _read_range(self.file, start, length)

    def close(self) -> None:
        self.file.close()


def _read_range(file, start: int, length: int) -> Iterator[bytes]:
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


class S3Object:
    def __init__(self, file):
        # S3File loaded the object's metadata (a HEAD) when it was opened; its
        # body is only fetched below, one ranged GET per response, instead of
        # S3File's download of the whole object into memory.
        self.object = file.obj
        self.size = self.object.content_length
        self.etag = self.object.e_tag
        self.last_modified = self.object.last_modified

    def read_range(self, start: int, length: int) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        arguments = {"IfMatch": self.etag}
        if length != self.size:
            arguments["Range"] = f"bytes={start}-{start + length - 1}"
        # The GET is sent now, so a missing object is still a 410 and not a
        # response cut short; IfMatch: never bytes of another version.
        try:
            body = self.object.get(**arguments)["Body"]
        except ClientError as exc:
            if _status_of(exc) in (404, 412):
                raise Missing from exc
            raise StorageUnavailable(str(exc)) from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(str(exc)) from exc
        return _stream_body(body)

    def close(self) -> None:
        pass


def _stream_body(body) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(CHUNK_SIZE)
    finally:
        body.close()


def _status_of(exc) -> int | None:
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def open_stored(stored: FieldFile) -> LocalFile | S3Object:
    """The stored file, opened for reading; Missing or StorageUnavailable if it cannot be."""
    if not stored.name:
        raise Missing
    storage = stored.storage
    if not is_s3(storage):
        try:
            return LocalFile(storage.open(stored.name, "rb"), stored.name)
        except (FileNotFoundError, IsADirectoryError, ValueError) as exc:
            raise Missing from exc
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return S3Object(storage.open(stored.name, "rb"))
    except FileNotFoundError as exc:
        raise Missing from exc
    except (ClientError, BotoCoreError) as exc:
        raise StorageUnavailable(str(exc)) from exc


def presigned_url(stored: FieldFile, *, content_type: str, filename: str) -> str:
    """A URL that serves the object for VIDEOGEN_S3_URL_EXPIRY seconds; Missing if there is none."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        if not stored.name or not stored.storage.exists(stored.name):
            raise Missing
    except (ClientError, BotoCoreError) as exc:
        raise StorageUnavailable(str(exc)) from exc
    signer = storages["presign"] if "presign" in settings.STORAGES else stored.storage
    return signer.url(
        stored.name,
        parameters={
            # What the API itself would send, so a player or a `curl -OJ`
            # sees no difference.
            "ResponseContentType": content_type,
            "ResponseContentDisposition": f'inline; filename="{filename}"',
        },
        expire=settings.VIDEOGEN_S3_URL_EXPIRY,
    )


def put_replacing(name: str, data: bytes, storage: Storage = default_storage, *, durable: bool = True) -> None:
    """
    Store data at exactly `name`, replacing what is there. Django's
    storage.save never overwrites (it picks another name), so: on disk, a
    temporary file in the same directory renamed over the old one (atomic on
    one filesystem; `durable` flushes it to the disk first, so a crash
    cannot leave the name pointing at an empty file); on S3, one upload to
    the fixed key, which S3 makes visible only once whole (a single
    PutObject, or a multipart upload at its completion).
    """
    if is_s3(storage):
        # _save is the backend's own upload to the exact key; save() would first look for a free name.
        storage._save(name, ContentFile(data))
        return
    path = storage.path(name)
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".replacing-", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            if durable:
                file.flush()
                os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def live_preview_name(job_id) -> str:
    """Where a running job's live preview is kept: one file per job, overwritten, removed when the run ends."""
    return f"live/{job_id}.jpg"


def delete_files(names: list[str]) -> None:
    """
    Remove stored files by name (a job's video, poster, preview). One that is
    already gone is fine; StorageUnavailable when the storage refuses, so
    the caller keeps the row that names them instead of orphaning them.
    """
    for name in names:
        if not name:
            continue
        try:
            default_storage.delete(name)
        except FileNotFoundError:
            pass
        except Exception as exc:
            raise StorageUnavailable(f"could not delete {name}: {exc}") from exc
