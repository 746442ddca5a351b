"""
A real webhook receiver on 127.0.0.1: it verifies each delivery's signature
with the standardwebhooks package (the spec's reference verifier) and
answers according to the path, misbehaving on purpose:

  /ok        200
  /slow      waits `slow_seconds` before answering 200
  /flaky     500 for the first two attempts of each event, then 200
  /gone      410
  /redirect  302 to /ok (a client that followed it would be delivered twice)
  /close     closes the connection without answering

With `tls` (an ssl server context, e.g. from tls_context()), it speaks
HTTPS and records the host name each client asked for (SNI).
"""

import contextlib
import datetime
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook, WebhookVerificationError

from tests.support.processes import wait_until

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict
    at: float
    # The body as it arrived, for verifiers that must see the signed bytes.
    raw: bytes = b""


@dataclass
class Receiver:
    url: str
    slow_seconds: float = 15.0
    deliveries: list[Received] = field(default_factory=list)
    # Requests whose signature did not verify, as (path, reason).
    rejected: list[tuple[str, str]] = field(default_factory=list)
    attempts: Counter = field(default_factory=Counter)
    # The host names TLS clients sent (SNI), in order.
    server_names: list[str | None] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def delivered(self, path: str = "/ok") -> list[Received]:
        with self.lock:
            return [received for received in self.deliveries if received.path == path]

    def wait_for(self, count: int, path: str = "/ok", timeout: float = 60) -> list[Received]:
        def arrived() -> list[Received] | None:
            received = self.delivered(path)
            return received if len(received) >= count else None

        return wait_until(arrived, f"{count} deliveries to {path}", timeout=timeout,
                          details=lambda: f"{len(self.delivered(path))} of {count} arrived")


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            path = self.path
            headers = {name.lower(): value for name, value in self.headers.items()}
            try:
                payload = Webhook(SECRET).verify(body, headers)
            except WebhookVerificationError as exc:
                with receiver.lock:
                    receiver.rejected.append((path, str(exc)))
                self._answer(401, b"bad signature")
                return
            with receiver.lock:
                receiver.attempts[(path, headers["webhook-id"])] += 1
                attempt = receiver.attempts[(path, headers["webhook-id"])]
            if path == "/close":
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            if path == "/slow":
                time.sleep(receiver.slow_seconds)
            if path == "/flaky" and attempt <= 2:
                self._answer(500, b"try again")
                return
            if path == "/gone":
                self._answer(410, b"this endpoint is gone")
                return
            if path == "/redirect":
                self.send_response(302)
                self.send_header("Location", receiver.url + "/ok")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            with receiver.lock:
                receiver.deliveries.append(Received(path, headers, payload, time.time(), body))
            self._answer(200, b"thanks " * 400)

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@contextlib.contextmanager
def running_receiver(
    slow_seconds: float = 15.0, *, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"
) -> Iterator[Receiver]:
    """The receiver on 127.0.0.1; its URL names `host` (which must resolve there)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), None)
    scheme = "https" if tls is not None else "http"
    receiver = Receiver(url=f"{scheme}://{host}:{server.server_address[1]}", slow_seconds=slow_seconds)
    if tls is not None:
        tls.sni_callback = lambda connection, name, context: receiver.server_names.append(name)
        # The handshake happens in accept(); one that fails is dropped there (socketserver ignores OSError).
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.RequestHandlerClass = _handler(receiver)
    server.daemon_threads = True
    # shutdown() waits for serve_forever to look again (every 0.5 s by default).
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def event_types(received: list[Received]) -> list[str]:
    return [item.body["type"] for item in received]


def tls_context(certificate_chain_pem: bytes, private_key_pem: bytes, tmp_path) -> ssl.SSLContext:
    """A server context presenting this certificate (chain first, leaf first) and key."""
    chain, key = tmp_path / "server-chain.pem", tmp_path / "server-key.pem"
    chain.write_bytes(certificate_chain_pem)
    key.write_bytes(private_key_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(chain, key)
    return context


def self_signed(host: str) -> tuple[bytes, bytes]:
    """A certificate for `host` signed by its own key (no CA), and that key, as PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem
