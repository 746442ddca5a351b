"""
The WSGI application (gunicorn `videogen.wsgi:application`), with chunked
request bodies made readable.

For more information on this file, see
https://docs.djangoproject.com/en/5.2/howto/deployment/wsgi/
"""

import io
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'videogen.settings')


class ChunkedBodies:
    """
    Django reads a request body only up to its Content-Length, so a chunked
    body (which has none) reads as empty: a chunked POST /generate would be
    refused as missing every field. Where the server has decoded the chunks
    and ends the input stream there (gunicorn says so with
    wsgi.input_terminated), read the body here, at most one byte past the
    body limit, and give Django its length; one over the limit gets the same
    413 as any other body that is too large.
    """

    def __init__(self, app, limit):
        self.app = app
        # The body limit of a path (jobs.api.middleware.body_limit).
        self.limit = limit

    def __call__(self, environ, start_response):
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if chunked and environ.get("wsgi.input_terminated") and not environ.get("CONTENT_LENGTH"):
            body = environ["wsgi.input"].read(self.limit(environ.get("PATH_INFO", "")) + 1)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)


def _application():
    from jobs.api.middleware import body_limit

    from videogen.handoff import HandOffApplication

    django_app = get_wsgi_application()
    return ChunkedBodies(HandOffApplication(django_app), body_limit)


application = _application()
