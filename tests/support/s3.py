"""
A real S3-compatible server for the tests: moto's standalone server, started
once per test session on a free port of 127.0.0.1. Tests that use it get a
fresh bucket each (`s3` fixture, tests/test_s3_storage.py), Django's default
storage pointed at it, and the environment a qcluster needs to write to it.
"""

import contextlib
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import free_port, wait_until

STARTUP_TIMEOUT = 60
REGION = "us-east-1"
# moto accepts any credentials; these are only what boto3 signs with.
ACCESS_KEY = "videogen-test"
SECRET_KEY = "videogen-test-secret"


@dataclass
class S3Server:
    endpoint_url: str
    process: subprocess.Popen
    log_path: Path

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )


@contextlib.contextmanager
def running_s3_server(log_path: Path) -> Iterator[S3Server]:
    port = free_port()
    with open(log_path, "a") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = S3Server(f"http://127.0.0.1:{port}", process, log_path)
    try:

        def listens() -> bool:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
            return False

        wait_until(listens, "moto_server to listen", timeout=STARTUP_TIMEOUT, gone=lambda: process.poll() is not None,
                   details=lambda: log_path.read_text()[-3000:])
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Bucket:
    server: S3Server
    name: str

    @property
    def env(self) -> dict[str, str]:
        """What a child process (a qcluster) needs to store into this bucket."""
        return {
            "AWS_STORAGE_BUCKET_NAME": self.name,
            "AWS_S3_ENDPOINT_URL": self.server.endpoint_url,
            "AWS_S3_REGION_NAME": REGION,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }

    @property
    def storage_options(self) -> dict:
        """The OPTIONS settings.py gives S3Storage for the same environment."""
        return {
            "bucket_name": self.name,
            "endpoint_url": self.server.endpoint_url,
            "region_name": REGION,
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
            "file_overwrite": False,
            "signature_version": "s3v4",
        }

    def keys(self) -> list[str]:
        paginator = self.server.client().get_paginator("list_objects_v2")
        return sorted(
            item["Key"] for page in paginator.paginate(Bucket=self.name) for item in page.get("Contents", [])
        )

    def multipart_uploads(self) -> list[str]:
        answer = self.server.client().list_multipart_uploads(Bucket=self.name)
        return [upload["Key"] for upload in answer.get("Uploads", [])]

    def get(self, key: str) -> bytes:
        return self.server.client().get_object(Bucket=self.name, Key=key)["Body"].read()

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.server.client().put_object(Bucket=self.name, Key=key, Body=data, ContentType=content_type)

    def delete(self, key: str) -> None:
        self.server.client().delete_object(Bucket=self.name, Key=key)


def new_bucket(server: S3Server) -> Bucket:
    bucket = Bucket(server, f"videogen-{uuid.uuid4().hex[:12]}")
    server.client().create_bucket(Bucket=bucket.name)
    return bucket


def s3_storages(bucket: Bucket, **options) -> dict:
    """A STORAGES setting whose default storage (and presigning twin) is this bucket."""
    s3 = {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {**bucket.storage_options, **options}}
    return {
        "default": s3,
        "presign": s3,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


# Fixtures: a test module that needs S3 imports these names.


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    with running_s3_server(tmp_path_factory.mktemp("s3") / "moto.log") as server:
        yield server


@pytest.fixture
def bucket(s3_server, settings) -> Bucket:
    """A new, empty bucket, and Django's default storage pointed at it."""
    bucket = new_bucket(s3_server)
    settings.STORAGES = s3_storages(bucket)
    settings.VIDEOGEN_S3_REDIRECT = True
    return bucket
