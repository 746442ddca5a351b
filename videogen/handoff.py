"""
Long-lived answers (the event stream, `Prefer: wait`) without a thread each.

A view returns a HandOff: Django and its middleware run as for any request,
in a gunicorn thread, and produce the answer's status and headers; then,
under our gunicorn worker (Worker, videogen/gunicorn.py), the connection
itself moves to this process's one event loop (loop()) and the thread is free
at once. The coroutine writes the body there, and a dropped client costs one
socket and two tasks until the loop notices. The REST API keeps its threaded
workers, whose speed the measurements chose (bench/RESULTS.md, events: the
alternatives measured). Where there is no such worker (Django's test client,
another server), a thread relays the coroutine's output as a streaming body.
"""

import asyncio
import logging
import os
import queue
import socket
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterator
from email.utils import formatdate
from http import HTTPStatus

from django.http import StreamingHttpResponse
from gunicorn import util
from gunicorn.workers import base
from gunicorn.workers.gthread import ThreadWorker

logger = logging.getLogger(__name__)

# A client that reads nothing for this long is dropped rather than buffered for.
SEND_TIMEOUT = 30.0

# The gunicorn sockets whose connection moved to the loop: Worker closes only its own descriptor.
_taken: "weakref.WeakSet[socket.socket]" = weakref.WeakSet()
_taken_lock = threading.Lock()
# True in a process of our gunicorn worker, the only server whose connections can move.
_worker_process = False

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


class Worker(ThreadWorker):
    """gunicorn's gthread worker, which lets the application take a connection over (HandOff)."""

    def init_process(self):
        global _worker_process
        _worker_process = True
        super().init_process()

    def handle_quit(self, sig, frame):
        # gthread's own first shuts its thread pool down, which takes the lock
        # that the pool's submit() holds: a Ctrl-C landing while this (main)
        # thread was inside submit() hung the worker until the master's SIGKILL
        # 10 s later. The quick stop (videogen/gunicorn.py's worker_int) leaves
        # the process at once, so the pool needs no shutdown.
        base.Worker.handle_quit(self, sig, frame)

    def finish_request(self, conn, fs):
        with _taken_lock:
            taken = conn.sock in _taken
            _taken.discard(conn.sock)
        if not taken:
            return super().finish_request(conn, fs)
        # gthread's close half-closes the connection (shutdown), which would end
        # the stream: close this descriptor only; the loop holds a duplicate.
        self.nr_conns -= 1
        util.close(conn.sock)


def loop() -> asyncio.AbstractEventLoop:
    """This process's event loop for handed-off answers, on a daemon thread started at first use (after the fork)."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            new_loop = asyncio.new_event_loop()
            threading.Thread(target=new_loop.run_forever, name="videogen-handoff", daemon=True).start()
            _loop = new_loop
        return _loop


def reset_after_fork() -> None:
    global _loop
    _loop = None


os.register_at_fork(after_in_child=reset_after_fork)


class Output:
    """Where a HandOff's coroutine writes: start() once, then write(); `gone` is set when the client left."""

    def __init__(self):
        self.gone = asyncio.Event()

    async def start(self, status: int, headers: dict[str, str]) -> None:
        raise NotImplementedError

    async def write(self, data: bytes) -> None:
        raise NotImplementedError


class HandOff(StreamingHttpResponse):
    """
    An answer written by `run(output)`, a coroutine on loop(). Its status and
    headers are the ones Django's middleware saw; `run` may change them in
    output.start() only where the connection moved (`moved`); relayed, they
    are the ones given here.
    """

    def __init__(self, run: Callable[[Output], Awaitable[None]], *, status: int = 200, content_type: str):
        self.run = run
        super().__init__(streaming_content=self._relayed(), status=status, content_type=content_type)

    def _relayed(self) -> Iterator[bytes]:
        chunks: queue.Queue[bytes | None] = queue.Queue()
        output = _Relay(chunks)
        event_loop = loop()

        async def run():
            try:
                await self.run(output)
            finally:
                chunks.put(None)

        future = asyncio.run_coroutine_threadsafe(run(), event_loop)
        try:
            while (chunk := chunks.get()) is not None:
                yield chunk
        finally:
            event_loop.call_soon_threadsafe(output.gone.set)
            future.result(timeout=SEND_TIMEOUT)


def moves_connection(request) -> bool:
    """Whether a HandOff answer to this request will run on the loop without holding a thread."""
    return _worker_process and "gunicorn.socket" in request.META


class _Relay(Output):
    def __init__(self, chunks: queue.Queue):
        super().__init__()
        self.chunks = chunks

    async def start(self, status: int, headers: dict[str, str]) -> None:
        pass

    async def write(self, data: bytes) -> None:
        if self.gone.is_set():
            raise ConnectionResetError("the client went away")
        self.chunks.put(data)


class _Moved(Output):
    """The connection itself, on the loop: a close-delimited HTTP/1.1 answer."""

    def __init__(self, status: int, headers: list[tuple[str, str]]):
        super().__init__()
        self.status = status
        self.headers = headers
        self.writer: asyncio.StreamWriter | None = None
        self.reader: asyncio.StreamReader | None = None
        self.started = False

    async def open(self, sock: socket.socket) -> None:
        self.reader, self.writer = await asyncio.open_connection(sock=sock)
        asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        # A client of these answers sends nothing more: end of input is its leaving.
        try:
            while await self.reader.read(4096):
                pass
        except OSError:
            pass
        self.gone.set()

    async def start(self, status: int, headers: dict[str, str]) -> None:
        names = {name.lower() for name in headers}
        merged = [(name, value) for name, value in self.headers if name.lower() not in names] + list(headers.items())
        head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
        head += [f"{name}: {value}" for name, value in merged if name.lower() not in ("connection", "transfer-encoding")]
        head.append(f"Date: {formatdate(usegmt=True)}")
        head.append("Connection: close")
        await self._send(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        self.started = True

    async def write(self, data: bytes) -> None:
        if not self.started:
            await self.start(self.status, {})
        await self._send(data)

    async def _send(self, data: bytes) -> None:
        if self.gone.is_set():
            raise ConnectionResetError("the client went away")
        self.writer.write(data)
        async with asyncio.timeout(SEND_TIMEOUT):
            await self.writer.drain()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.gone.set()


class HandOffApplication:
    """
    The WSGI application around Django's: a HandOff answer's connection
    moves to the loop (under Worker); every other answer passes through as is.
    """

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        sock = environ.get("gunicorn.socket")
        if not _worker_process or sock is None:
            return self.app(environ, start_response)
        seen: list = []
        iterable = self.app(environ, lambda status, headers, exc_info=None: seen.append((status, headers)))
        if not isinstance(iterable, HandOff):
            start_response(*seen[-1])
            return iterable
        status, headers = seen[-1]
        start_response(status, [("Connection", "close")])
        # The head is written by the loop: tell gunicorn it is sent, and that this connection is done.
        gunicorn_response = start_response.__self__
        gunicorn_response.headers_sent = True
        gunicorn_response.chunked = False
        gunicorn_response.force_close()
        moved = socket.socket(fileno=os.dup(sock.fileno()))
        with _taken_lock:
            _taken.add(sock)
        output = _Moved(iterable.status_code, headers)
        asyncio.run_coroutine_threadsafe(_serve(iterable, output, moved), loop())
        # Django's end of the request (request_finished: its database connection goes back).
        iterable.close()
        return []


async def _serve(answer: HandOff, output: _Moved, sock: socket.socket) -> None:
    try:
        sock.setblocking(False)
        await output.open(sock)
        await answer.run(output)
    except (OSError, TimeoutError):
        pass
    except Exception:
        logger.exception("a handed-off answer failed")
    finally:
        output.close()
        if output.writer is None:
            sock.close()
