"""
HTTP requests, counted in the gunicorn workers with prometheus_client's
multiprocess mode (files under PROMETHEUS_MULTIPROC_DIR, summed at the
scrape): a database write per request would cost every request. And the
scrape itself (render): those and the job series.
"""

import time

from jobs.metrics.series import render_jobs

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


_http = None


def _http_metrics():
    global _http
    if _http is None:
        from prometheus_client import Counter, Histogram

        _http = (
            Counter("videogen_http_requests", "HTTP requests answered.", ["view", "method", "status"]),
            Histogram("videogen_http_request_duration_seconds", "Time to answer, by view.", ["view", "method"],
                      buckets=HTTP_BUCKETS),
        )
    return _http


class MetricsMiddleware:
    """Counts and times every request (installed only with VIDEOGEN_METRICS=true)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        view = (match.url_name or match.view_name) if match else "unmatched"
        method = request.method if request.method in KNOWN_METHODS else "other"
        requests, latency = _http_metrics()
        requests.labels(view, method, str(response.status_code)).inc()
        latency.labels(view, method).observe(time.perf_counter() - started)
        return response


# Anything else is "other", so that clients cannot create series at will.
KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


# --- The scrape ---------------------------------------------------------------


def render() -> str:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return generate_latest(registry).decode() + render_jobs()
