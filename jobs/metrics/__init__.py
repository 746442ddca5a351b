"""
Prometheus metrics (VIDEOGEN_METRICS=true), served at /metrics.

Two sources, each correct however many processes there are:
- HTTP requests, counted in the gunicorn workers with prometheus_client's
  multiprocess mode (files under PROMETHEUS_MULTIPROC_DIR, summed at scrape):
  a per-request database write would cost every request.
- Jobs, counted in the database (MetricSeries) where their status changes, by
  whichever process changes it (API, worker, reaper, admin, on any host;
  submits are summed in memory and written once a second, SubmitCounts); the
  gauges are read from the jobs table through the status index, and worker
  liveness and GPU memory from the small tables the workers write. A scrape
  reads a few hundred rows, never the whole jobs table.

series.py holds the job series; http.py the request metrics and the scrape.
"""
