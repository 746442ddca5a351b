"""A client for the videogen API: submit prompts (and images), wait or stream events, download the MP4."""

from videogen_client._base import REQUEST_FIELDS, __version__
from videogen_client.async_client import AsyncClient
from videogen_client.client import Client
from videogen_client.errors import (
    ApiError,
    Conflict,
    ConnectionFailed,
    DownloadError,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
    ValidationError,
    VideogenError,
    WaitTimeout,
    WebhookVerificationError,
)
from videogen_client.types import Event, Job, Model, ModelList, Video
from videogen_client.webhooks import verify_webhook

__all__ = [
    "REQUEST_FIELDS",
    "__version__",
    "AsyncClient",
    "Client",
    "ApiError",
    "Conflict",
    "ConnectionFailed",
    "DownloadError",
    "NotFound",
    "RateLimited",
    "ServerError",
    "Unauthorized",
    "ValidationError",
    "VideogenError",
    "WaitTimeout",
    "WebhookVerificationError",
    "Event",
    "Job",
    "Model",
    "ModelList",
    "Video",
    "verify_webhook",
]
