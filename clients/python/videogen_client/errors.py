"""The errors the client raises: one class per kind of answer a caller handles differently."""

from __future__ import annotations

from typing import Any


class VideogenError(Exception):
    """Anything this client raises on purpose: catch this to catch them all."""


class ApiError(VideogenError):
    """The server answered with an error: `.status` (the HTTP status) and `.detail` (its message)."""

    def __init__(self, status: int, detail: str, *, body: Any = None, headers: dict[str, str] | None = None):
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.body = body if body is not None else {}
        self.headers = headers or {}


class ValidationError(ApiError):
    """400: the request was refused; `.errors` maps each field to its messages."""

    @property
    def errors(self) -> dict[str, list[str]]:
        errors = self.body.get("errors") if isinstance(self.body, dict) else None
        return errors if isinstance(errors, dict) else {}


class Unauthorized(ApiError):
    """401: no API key, or a wrong or revoked one."""


class NotFound(ApiError):
    """404: no such job, or another user's (the server does not say which)."""


class Conflict(ApiError):
    """409: the job is not in a state that allows this (a download before completion, a cancel after it)."""


class RateLimited(ApiError):
    """429: too many requests or too many active jobs; `.retry_after` is the server's Retry-After in seconds."""

    def __init__(self, status: int, detail: str, *, retry_after: float | None = None, **kwargs):
        super().__init__(status, detail, **kwargs)
        self.retry_after = retry_after


class ServerError(ApiError):
    """5xx: the server or something it depends on failed (after the client's retries)."""


class ConnectionFailed(VideogenError):
    """The server could not be reached, or the connection broke, after the client's retries."""


class DownloadError(VideogenError):
    """A download ended with a file of the wrong size."""


class WaitTimeout(VideogenError, TimeoutError):
    """wait() gave up: the job did not finish within its timeout. `.job` is the last state seen."""

    def __init__(self, message: str, job=None):
        super().__init__(message)
        self.job = job


class WebhookVerificationError(VideogenError):
    """A webhook's signature or timestamp did not verify: do not trust its body."""


STATUS_ERRORS: dict[int, type[ApiError]] = {
    400: ValidationError,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    429: RateLimited,
}


def error_for(status: int, body: Any, headers: dict[str, str]) -> ApiError:
    """The exception for an error answer, its detail taken from the JSON body when there is one."""
    detail = body.get("detail") if isinstance(body, dict) else None
    if not isinstance(detail, str):
        detail = str(body)[:500] if body else f"HTTP {status}"
    if status == 429:
        return RateLimited(status, detail, retry_after=retry_after(headers), body=body, headers=headers)
    cls = STATUS_ERRORS.get(status, ServerError if status >= 500 else ApiError)
    return cls(status, detail, body=body, headers=headers)


def retry_after(headers: dict[str, str]) -> float | None:
    """Retry-After in seconds (this API sends delta-seconds only)."""
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
