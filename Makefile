# `make run` and `make test` work on a fresh clone: they build the virtualenv
# from requirements.txt first (again only when requirements.txt changes).
SHELL := /bin/bash
PYTHON ?= python3
PORT ?= 8000
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: run test test-fast setup migrate clean

$(INSTALLED): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install -r requirements.txt
	touch $(INSTALLED)

setup: $(INSTALLED)

migrate: $(INSTALLED)
	$(PY) manage.py migrate --noinput

# The API, one django-q2 worker, and the webhook cluster (its own queue, so a
# delivery never waits behind a generation), in the foreground. Ctrl-C stops all (a
# running job is handed back to the queue at its next step, and the next
# `make run` finishes it); if either dies, the other is stopped too.
# Background jobs of a script ignore SIGINT, hence the trap.
#
# The API runs on gunicorn, as in docker/, never Django's development server
# (which reads chunked bodies as empty and answers odd /static/ paths with a
# 500); WhiteNoise serves the collected static files (admin, /api/v1/docs).
# Its settings (threaded workers, processes per core, the access log) are in
# videogen/gunicorn.py, with the measurements that chose them; docker/ and
# the tests use the same file. VIDEOGEN_WEB_PROCESSES / _THREADS override.
# The worker gets SIGTERM (it hands a running job back); gunicorn SIGINT, its
# quick stop (a SIGTERM right after the terminal's SIGINT makes it wait out
# --graceful-timeout).
GUNICORN := $(VENV)/bin/gunicorn -c python:videogen.gunicorn --bind 127.0.0.1:$(PORT)

run: migrate
	$(PY) manage.py collectstatic --noinput --verbosity 0
	@echo "videogen: API on http://127.0.0.1:$(PORT)/api/v1/ a qcluster (one worker per device, VIDEOGEN_DEVICES) and the webhook qcluster. Ctrl-C stops them all."
	@echo "Admin: create a staff user with '$(PY) manage.py createsuperuser', then open http://127.0.0.1:$(PORT)/admin/"
	@$(PY) manage.py qcluster & worker=$$!; \
	Q_CLUSTER_NAME=$${VIDEOGEN_WEBHOOK_QUEUE:-videogen-webhooks} $(PY) manage.py qcluster & hooks=$$!; \
	$(GUNICORN) & web=$$!; \
	trap 'kill -INT $$web 2>/dev/null; kill -TERM $$worker $$hooks 2>/dev/null; wait $$worker $$hooks $$web' INT TERM EXIT; \
	wait -n

test: $(INSTALLED)
	$(PY) -m pytest

# The inner loop: every in-process test, under a minute. Tests marked `slow`
# (real processes: qcluster, gunicorn, `make run`, an S3 server, a browser, a
# fresh Python; or Hypothesis fuzzing) run in `make test` only, as in CI.
test-fast: $(INSTALLED)
	$(PY) -m pytest -m "not slow"

clean:
	rm -rf var/
