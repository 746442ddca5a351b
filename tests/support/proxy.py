"""
A TCP proxy in front of a test server that breaks connections on purpose:
the way a flaky network or a restarting load balancer drops a request's
answer, for the client's retries and resumes to be tested against.
"""

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

# Given the connection's number (0 first), its answer so far and the next chunk: None to pass the chunk
# on, or how many of its bytes to pass before cutting the connection.
CutRule = Callable[[int, bytes, bytes], int | None]


@dataclass
class Proxy:
    url: str
    # What each connection's client sent, by connection number.
    requests: dict[int, bytes] = field(default_factory=dict)
    cuts: int = 0


@contextlib.contextmanager
def breaking_proxy(port: int, cut: CutRule) -> Iterator[Proxy]:
    listener = socket.create_server(("127.0.0.1", 0))
    proxy = Proxy(f"http://127.0.0.1:{listener.getsockname()[1]}")
    lock = threading.Lock()
    stopping = threading.Event()

    def serve(client: socket.socket, number: int) -> None:
        with client, socket.create_connection(("127.0.0.1", port)) as upstream:
            def forward_requests() -> None:
                with contextlib.suppress(OSError):
                    while data := client.recv(65536):
                        with lock:
                            proxy.requests[number] = proxy.requests.get(number, b"") + data
                        upstream.sendall(data)

            threading.Thread(target=forward_requests, daemon=True).start()
            answered = b""
            with contextlib.suppress(OSError):
                while data := upstream.recv(65536):
                    passed = cut(number, answered, data)
                    if passed is not None:
                        client.sendall(data[:passed])
                        with lock:
                            proxy.cuts += 1
                        # shutdown() rather than close() alone: the thread reading requests holds the socket open.
                        client.shutdown(socket.SHUT_RDWR)
                        return
                    answered += data
                    client.sendall(data)

    def accept() -> None:
        number = 0
        while not stopping.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(client, number), daemon=True).start()
            number += 1

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield proxy
    finally:
        stopping.set()
        listener.close()
