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
synchronous Django, so under uvicorn each request hops to a thread: the
bare view ran at a quarter of this rate and GET /job at a fifth, and only
without persistent database connections.
"""

import os

wsgi_app = "videogen.wsgi:application"
worker_class = "gthread"
workers = int(os.environ.get("VIDEOGEN_WEB_PROCESSES") or 2 * (os.cpu_count() or 1))
threads = int(os.environ.get("VIDEOGEN_WEB_THREADS") or 2)
graceful_timeout = 10
accesslog = "-"
logger_class = "videogen.gunicorn.Logger"
# Two servers on one machine (tests, bench/) would share gunicorn's default control socket.
control_socket_disable = True

from gunicorn import glogging

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
