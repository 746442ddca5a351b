# `make run` and `make test` work on a fresh clone: they build the virtualenv
# first, and again only when the requirements change. `make run` installs the
# runtime (requirements.lock); `make test` adds the test and bench tools
# (requirements-dev.lock). Both are hash-pinned: `make lock` rebuilds them
# from requirements.txt and requirements-dev.txt.
SHELL := /bin/bash
PYTHON ?= python3
PORT ?= 8000
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
INSTALLED_DEV := $(VENV)/.installed-dev

.PHONY: run test test-fast setup setup-dev migrate lock clean

$(INSTALLED): requirements.txt requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --require-hashes -r requirements.lock
	touch $(INSTALLED)

$(INSTALLED_DEV): $(INSTALLED) requirements-dev.txt requirements-dev.lock
	$(PY) -m pip install --require-hashes -r requirements-dev.lock
	touch $(INSTALLED_DEV)

setup: $(INSTALLED)

setup-dev: $(INSTALLED_DEV)

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

test: $(INSTALLED_DEV)
	$(PY) -m pytest

# The inner loop: every in-process test, under a minute. Tests marked `slow`
# (real processes: qcluster, gunicorn, `make run`, an S3 server, a browser, a
# fresh Python; or Hypothesis fuzzing) run in `make test` only, as in CI.
test-fast: $(INSTALLED_DEV)
	$(PY) -m pytest -m "not slow"

# The lock files, from requirements*.txt, with pip-tools in its own virtualenv.
# requirements.lock and requirements-dev.lock are for our dev and CI machines,
# where torch==2.13.0 is the CPU build; docker/requirements.lock is the image's,
# resolved on PyPI alone (no local pip config), where it is the CUDA build with
# its nvidia-* wheels. The dev lock keeps the runtime's pins (-c).
# `make lock LOCK_ARGS=--upgrade` moves the unpinned transitive ones forward.
PIPTOOLS := var/piptools
COMPILE := CUSTOM_COMPILE_COMMAND="make lock" $(PIPTOOLS)/bin/pip-compile --quiet --generate-hashes \
	--allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links $(LOCK_ARGS)

$(PIPTOOLS)/bin/pip-compile:
	$(PYTHON) -m venv $(PIPTOOLS)
	$(PIPTOOLS)/bin/pip install --quiet pip-tools==7.7.0

lock: $(PIPTOOLS)/bin/pip-compile
	$(COMPILE) --output-file requirements.lock requirements.txt
	$(COMPILE) --constraint requirements.lock --output-file requirements-dev.lock requirements-dev.txt
	unset PIP_FIND_LINKS; PIP_CONFIG_FILE=/dev/null $(COMPILE) --index-url https://pypi.org/simple \
		--output-file docker/requirements.lock requirements.txt

clean:
	rm -rf var/
