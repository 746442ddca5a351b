"""
How the API is served, in one place: gunicorn reads this module as its
configuration (`gunicorn -c python:videogen.gunicorn`) for `make run`,
docker/, the tests and bench/. Also its logger: an access log that cannot
be written into.

The choice, measured with bench/api.py on a 2-core box (bench/RESULTS.md,
hot paths): threaded workers (gthread), two processes per core, two threads
each. Sync workers answered status polls a little faster, but a sync
process is held whole by one slow client (a video download) and overlaps
no database waits: submits, which wait for their commit to reach the disk,
ran at half the rate. More threads per process bought nothing (the GIL);
more processes per core, nothing either. No ASGI server: every view is
synchronous Django, so under uvicorn each request hops to a thread: a
fraction of this rate, and only without persistent database connections.
"""

import json
import os

wsgi_app = "videogen.wsgi:application"
# gthread, whose answers can move to an event loop (the event stream, Prefer: wait; videogen/handoff.py).
worker_class = "videogen.handoff.Worker"
workers = int(os.environ.get("VIDEOGEN_WEB_PROCESSES") or 2 * (os.cpu_count() or 1))
threads = int(os.environ.get("VIDEOGEN_WEB_THREADS") or 2)
graceful_timeout = 10
accesslog = "-"
logger_class = "videogen.gunicorn.Logger"
# Two servers on one machine (tests, bench/) would share gunicorn's default control socket.
control_socket_disable = True


def worker_int(worker) -> None:
    """
    A worker's quick stop (Ctrl-C's SIGINT, the master's SIGQUIT), where
    gunicorn would raise SystemExit: leave at once instead, after this
    process's exit handlers (the submit counts' last write). The
    interpreter's teardown of a Django process took 0.7-5 s of CPU on a busy
    2-core box, which the master and Ctrl-C on `make run` waited for
    (bench/RESULTS.md, make run stops). Requests in flight are cut, as a
    quick stop means; SIGTERM (docker, Kubernetes) still stops gracefully.
    """
    import atexit
    import logging
    import sys

    worker.log.info("Worker exiting (pid: %s)", worker.pid)
    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

from gunicorn import glogging, util

from videogen.logformat import JsonFormatter


def printable(value: str) -> str:
    """Control characters as \\xNN escapes, so a request cannot forge log lines or drive a terminal."""
    if value.isprintable():
        # Nearly every value: one C-level scan, not a Python loop per character.
        return value
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in value)


class Logger(glogging.Logger):
    def setup(self, cfg):
        super().setup(cfg)
        # gunicorn starts before Django's settings: VIDEOGEN_LOG_FORMAT is read
        # here too, so that its own lines (access log included) match the rest.
        if os.environ.get("VIDEOGEN_LOG_FORMAT") == "json":
            for handler in (*self.error_log.handlers, *self.access_log.handlers):
                handler.setFormatter(JsonFormatter())

    def atoms(self, resp, req, environ, request_time):
        return {name: printable(value) if isinstance(value, str) else value
                for name, value in super().atoms(resp, req, environ, request_time).items()}


# gunicorn's own error answers, longest detail kept (its messages can quote the request).
MAX_ERROR_DETAIL = 300


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """
    What gunicorn answers itself, before Django sees a request (a request line
    or a header over its limits, a Content-Length that is not a number, a line
    that is no request), as JSON with a `detail` like every answer under
    /api/, instead of its HTML page. No limit can let Django answer these: a
    request gunicorn cannot frame never reaches it.
    """
    body = json.dumps({"detail": (mesg or f"{reason}.")[:MAX_ERROR_DETAIL]}, separators=(",", ":")).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


# Its one call site (gunicorn.workers.base.Worker.handle_error) looks it up on the module.
util.write_error = write_json_error

