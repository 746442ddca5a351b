"""gunicorn's logger for `make run` and docker/: an access log that cannot be written into."""

import os

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
