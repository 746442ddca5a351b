"""gunicorn's logger for `make run` and docker/: an access log that cannot be written into."""

from gunicorn import glogging


def printable(value: str) -> str:
    """Control characters as \\xNN escapes, so a request cannot forge log lines or drive a terminal."""
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in value)


class Logger(glogging.Logger):
    def atoms(self, resp, req, environ, request_time):
        return {name: printable(value) if isinstance(value, str) else value
                for name, value in super().atoms(resp, req, environ, request_time).items()}
