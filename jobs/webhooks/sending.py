"""
One webhook request: the URL check, a connection to the checked address
(over TLS, the certificate checked against the host name), the Standard
Webhooks signature, and the backoff between attempts.
"""

import http.client
import random
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from datetime import timezone as dt_timezone
from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings

from jobs.services.outbound import RefusedURL, check_public_url, connect_checked

BODY_KEPT = 1024
# Longest wait between two attempts.
MAX_BACKOFF = 3600.0


def check_url(url: str, *, resolve: bool = True) -> None:
    """
    Raise RefusedURL unless the URL is one deliveries may go to: https (or
    http to an allowed host), at most 2,000 characters, no credentials, and
    a host that resolves only to public addresses (or is allowed).
    """
    check_public_url(
        url, allowed_hosts=settings.VIDEOGEN_WEBHOOK_ALLOWED_HOSTS, setting="VIDEOGEN_WEBHOOK_ALLOWED_HOSTS",
        resolve=resolve,
    )


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    """A socket connected to the host, at an address checked now (not at submit)."""
    return connect_checked(host, port, timeout, allowed_hosts=settings.VIDEOGEN_WEBHOOK_ALLOWED_HOSTS)


class _HTTPConnection(http.client.HTTPConnection):
    def connect(self):
        self.sock = _connect(self.host, self.port, self.timeout)


@lru_cache(maxsize=4)
def _tls_context(ca_bundle: str) -> ssl.SSLContext:
    """The system's trusted CAs, and those of VIDEOGEN_WEBHOOK_CA_BUNDLE (a PEM file) when set."""
    context = ssl.create_default_context()
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)
    return context


class _HTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int | None, timeout: float):
        super().__init__(host, port, timeout=timeout, context=_tls_context(settings.VIDEOGEN_WEBHOOK_CA_BUNDLE))

    def connect(self):
        sock = _connect(self.host, self.port, self.timeout)
        # Connected to the checked address; the certificate is checked against
        # the host name (sent as SNI), never the address.
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


@dataclass
class Outcome:
    status_code: int | None
    latency_ms: int
    body: str = ""
    error: str = ""
    # The URL was refused (a non-public address): asking again would only probe.
    refused: bool = False

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retryable(self) -> bool:
        # No answer (timeout, refused, reset), a server error or "slow down".
        # Other answers (4xx, and 3xx: redirects are not followed) are final.
        if self.refused:
            return False
        return self.status_code is None or self.status_code >= 500 or self.status_code == 429


def signature_headers(event_id: str, payload: str, at: datetime) -> dict[str, str]:
    from standardwebhooks import Webhook

    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(settings.VIDEOGEN_WEBHOOK_SECRET).sign(event_id, at, payload),
    }


def send(url: str, event_id: str, payload: str) -> Outcome:
    """One POST of the event, within VIDEOGEN_WEBHOOK_TIMEOUT seconds all told."""
    started = time.monotonic()
    timeout = settings.VIDEOGEN_WEBHOOK_TIMEOUT
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "videogen-webhooks",
        **signature_headers(event_id, payload, datetime.now(dt_timezone.utc)),
    }
    connection_class = _HTTPSConnection if parts.scheme == "https" else _HTTPConnection
    connection = connection_class(parts.hostname, parts.port, timeout=timeout)
    # The socket timeout bounds each read; this bounds the whole exchange
    # (a receiver that trickles a byte every few seconds).
    watchdog = threading.Timer(timeout, _abort, args=(connection,))
    watchdog.start()
    try:
        check_url(url, resolve=False)
        connection.request("POST", path, body=payload.encode(), headers=headers)
        response = connection.getresponse()
        body = response.read(BODY_KEPT).decode("utf-8", "replace")
        return Outcome(response.status, _elapsed_ms(started), body=body)
    except RefusedURL as exc:
        return Outcome(None, _elapsed_ms(started), error=f"refused: {exc}", refused=True)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if time.monotonic() - started >= timeout:
            return Outcome(None, _elapsed_ms(started), error=f"timed out after {timeout:g} s")
        return Outcome(None, _elapsed_ms(started), error=f"{exc.__class__.__name__}: {exc}"[:BODY_KEPT])
    finally:
        watchdog.cancel()
        connection.close()


def _abort(connection: http.client.HTTPConnection) -> None:
    sock = connection.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def backoff(attempt: int) -> float:
    """Seconds to wait after the attempt-th failure: exponential, capped, with jitter."""
    ceiling = min(settings.VIDEOGEN_WEBHOOK_RETRY_BASE * 2 ** (attempt - 1), MAX_BACKOFF)
    return ceiling * random.uniform(0.5, 1.0)
