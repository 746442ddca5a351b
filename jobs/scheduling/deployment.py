"""
What this deployment serves: which models of the catalogue
(generation/registry.py), where their weights are, on which queue their jobs
wait, and how long a job may run.

Settings read the environment once (VIDEOGEN_MODELS, VIDEOGEN_DEFAULT_MODEL,
VIDEOGEN_MODELS_FILE, VIDEOGEN_MODEL_SOURCES, VIDEOGEN_MODEL_QUEUES,
VIDEOGEN_JOB_TIMEOUT); this module turns them and the catalogue into answers
once per process, so that the several questions a submit asks are dictionary
look-ups. A test that changes one of those settings gets fresh answers
(setting_changed, below).

It lives in `jobs`, the app that accepts, routes and times jobs: the engine
knows nothing of it, and the adapter (generation/runner.py) already
depends on `jobs`.
"""

import dataclasses
import functools
import json
from collections.abc import Mapping
from types import MappingProxyType

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from generation.registry import CatalogueError, ModelSpec, catalogue, get_spec


def source_variable(model_name: str) -> str:
    """A model's VIDEOGEN_MODEL_SOURCE_<NAME> suffix: upper-cased, "-" and "." as "_"."""
    return model_name.upper().replace("-", "_").replace(".", "_")


@functools.cache
def known_models() -> Mapping[str, ModelSpec]:
    """Every model this installation knows: the catalogue with the models file and weights locations applied."""
    path = settings.VIDEOGEN_MODELS_FILE
    overrides = {}
    if path:
        try:
            with open(path) as handle:
                overrides = json.load(handle)
        except (OSError, ValueError) as exc:
            raise ImproperlyConfigured(f"VIDEOGEN_MODELS_FILE {path!r} cannot be read: {exc}")
    try:
        specs = catalogue(overrides)
    except CatalogueError as exc:
        raise ImproperlyConfigured(f"VIDEOGEN_MODELS_FILE: {exc}")
    for name, spec in specs.items():
        source = settings.VIDEOGEN_MODEL_SOURCES.get(source_variable(name))
        if source:
            specs[name] = dataclasses.replace(spec, source=source)
        if spec.timeout is not None and not 1 <= spec.timeout <= settings.VIDEOGEN_JOB_TIMEOUT:
            # The broker's redelivery lock is sized from VIDEOGEN_JOB_TIMEOUT.
            raise ImproperlyConfigured(
                f"model {name!r}: timeout must be 1-{settings.VIDEOGEN_JOB_TIMEOUT} (VIDEOGEN_JOB_TIMEOUT)"
            )
    return MappingProxyType(specs)


def model_spec(name: str) -> ModelSpec:
    """A known model's spec as this deployment runs it; UnknownModel otherwise."""
    return get_spec(name, known_models())


@functools.cache
def served_models() -> Mapping[str, ModelSpec]:
    """The specs this deployment serves (VIDEOGEN_MODELS), in that order."""
    known = known_models()
    served = {}
    for name in settings.VIDEOGEN_MODELS:
        if name not in known:
            raise ImproperlyConfigured(f"VIDEOGEN_MODELS names {name!r}; known models: {', '.join(sorted(known))}")
        served[name] = known[name]
    if settings.VIDEOGEN_DEFAULT_MODEL not in served:
        raise ImproperlyConfigured(
            f"VIDEOGEN_DEFAULT_MODEL {settings.VIDEOGEN_DEFAULT_MODEL!r} is not in VIDEOGEN_MODELS"
        )
    return MappingProxyType(served)


def model_queues() -> Mapping[str, str]:
    """Model name to django-q2 queue, for the models VIDEOGEN_MODEL_QUEUES pins; the rest use the default queue."""
    return settings.VIDEOGEN_MODEL_QUEUES


def queue_for_model(name: str) -> str | None:
    """The django-q2 queue for a model's jobs, when VIDEOGEN_MODEL_QUEUES pins it; None for the default queue."""
    return settings.VIDEOGEN_MODEL_QUEUES.get(name)


def job_timeout(name: str) -> int:
    """Seconds a job of this model may run: the spec's own limit, else VIDEOGEN_JOB_TIMEOUT."""
    spec = known_models().get(name)
    return (spec.timeout if spec else None) or settings.VIDEOGEN_JOB_TIMEOUT


@functools.cache
def queue_timeout(queue: str | None) -> int:
    """
    The django-q2 timeout of a wake-up sent to a queue: the longest of its
    models' (the worker does not know which job it will claim; it then holds
    the job to that job's own, see generation.worker.limit_task_time).
    """
    pinned = settings.VIDEOGEN_MODEL_QUEUES
    models = [name for name in settings.VIDEOGEN_MODELS if pinned.get(name) == queue] or [settings.VIDEOGEN_DEFAULT_MODEL]
    return max(job_timeout(name) for name in models)


POLICY_SETTINGS = frozenset(
    {
        "VIDEOGEN_DEFAULT_MODEL",
        "VIDEOGEN_MODELS",
        "VIDEOGEN_MODELS_FILE",
        "VIDEOGEN_MODEL_SOURCES",
        "VIDEOGEN_MODEL_QUEUES",
        "VIDEOGEN_JOB_TIMEOUT",
    }
)


def forget() -> None:
    """Compute every answer again on next use (settings changed, or a models file was rewritten)."""
    for cached in (known_models, served_models, queue_timeout):
        cached.cache_clear()


@receiver(setting_changed)
def _settings_changed(*, setting: str, **kwargs) -> None:
    if setting in POLICY_SETTINGS:
        forget()
