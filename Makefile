# `make run` and `make test` work on a fresh clone: they build the virtualenv
# from requirements.txt first (again only when requirements.txt changes).
SHELL := /bin/bash
PYTHON ?= python3
PORT ?= 8000
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: run test setup migrate clean

$(INSTALLED): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install -r requirements.txt
	touch $(INSTALLED)

setup: $(INSTALLED)

migrate: $(INSTALLED)
	$(PY) manage.py migrate --noinput

# The API and one django-q2 worker, in the foreground. Ctrl-C stops both (a
# running job is handed back to the queue at its next step, and the next
# `make run` finishes it); if either dies, the other is stopped too. Background jobs of a script ignore SIGINT, hence the trap.
run: migrate
	@echo "videogen: API on http://127.0.0.1:$(PORT)/api/v1/ with one worker. Ctrl-C stops both."
	@echo "Admin: create a staff user with '$(PY) manage.py createsuperuser', then open http://127.0.0.1:$(PORT)/admin/"
	@$(PY) manage.py qcluster & worker=$$!; \
	$(PY) manage.py runserver --noreload --insecure 127.0.0.1:$(PORT) & web=$$!; \
	trap 'kill -TERM $$worker $$web 2>/dev/null; wait $$worker $$web' INT TERM EXIT; \
	wait -n

test: $(INSTALLED)
	$(PY) -m pytest

clean:
	rm -rf var/
