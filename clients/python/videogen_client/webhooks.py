"""Verifying the server's webhooks (Standard Webhooks: https://www.standardwebhooks.com/), by hand: no dependency."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from videogen_client.errors import WebhookVerificationError

# As the spec's reference libraries: a delivery older or newer than this is refused (replays).
TOLERANCE_SECONDS = 5 * 60


def verify_webhook(
    body: bytes | str, headers: Mapping[str, str], secret: str, *, tolerance: float = TOLERANCE_SECONDS
) -> dict[str, Any]:
    """
    The event's payload ({"type": "job.completed", "timestamp": ..., "data":
    the job}) once its signature is verified: webhook-signature must hold a
    v1 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}" keyed with
    the secret (the server's VIDEOGEN_WEBHOOK_SECRET, whsec_...), and the
    timestamp must be within `tolerance` seconds of now. Pass the body
    exactly as received (bytes, before any JSON parsing). Raises
    WebhookVerificationError otherwise.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    try:
        event_id, timestamp, signatures = (lowered[name] for name in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    except KeyError as exc:
        raise WebhookVerificationError(f"Missing header {exc.args[0]}.") from None
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not a Unix time.") from None
    if abs(time.time() - sent_at) > tolerance:
        raise WebhookVerificationError("webhook-timestamp is too far from now (a replay, or a wrong clock).")
    payload = body if isinstance(body, bytes) else body.encode()
    expected = base64.b64encode(
        hmac.new(_key(secret), f"{event_id}.{sent_at}.".encode() + payload, hashlib.sha256).digest()
    )
    for signature in signatures.split():
        version, _, value = signature.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return json.loads(payload)
    raise WebhookVerificationError("No signature matches: a wrong secret, or a body changed on the way.")


def _key(secret: str) -> bytes:
    encoded = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(encoded, validate=True)
    except ValueError:
        raise WebhookVerificationError("The secret is not whsec_ followed by base64.") from None
