"""What this deployment serves (jobs/scheduling/deployment.py): models, weights, queues, time limits, read once."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from generation.registry import UnknownModel
from jobs.scheduling import deployment
from jobs.scheduling.deployment import (
    job_timeout,
    known_models,
    model_spec,
    queue_for_model,
    queue_timeout,
    served_models,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def models_file(settings, tmp_path):
    def write(content) -> None:
        path = tmp_path / "models.json"
        path.write_text(json.dumps(content) if not isinstance(content, str) else content)
        settings.VIDEOGEN_MODELS_FILE = str(path)

    return write


def test_a_models_file_changes_a_builtin_spec(models_file):
    models_file({"cogvideox-2b": {"source": "/models/cogvideox", "enable_model_cpu_offload": True}})

    spec = model_spec("cogvideox-2b")

    assert (spec.source, spec.enable_model_cpu_offload, spec.max_frames) == ("/models/cogvideox", True, 49)


def test_a_models_file_adds_a_model(models_file):
    models_file(
        {"my-cogvideox": {"description": "fine-tuned", "pipeline_class": "CogVideoXPipeline", "source": "/m/x"}}
    )

    assert model_spec("my-cogvideox").source == "/m/x"


@pytest.mark.parametrize(
    "content, message",
    [
        ({"cogvideox-2b": {"weights": "/x"}}, "VIDEOGEN_MODELS_FILE: unknown fields"),
        ({"new-model": {"source": "/x"}}, "VIDEOGEN_MODELS_FILE: model 'new-model'"),
        ("{not json", "cannot be read"),
    ],
)
def test_a_bad_models_file_is_a_configuration_error(models_file, content, message):
    models_file(content)

    with pytest.raises(ImproperlyConfigured, match=message):
        known_models()


def test_a_weights_location_is_set_per_model(settings):
    settings.VIDEOGEN_MODEL_SOURCES = {"WAN2_1_T2V_1_3B": "/models/wan"}

    assert model_spec("wan2.1-t2v-1.3b").source == "/models/wan"
    assert model_spec("cogvideox-2b").source == "THUDM/CogVideoX-2b"


def test_settings_read_weights_locations_from_the_environment():
    env = {
        **os.environ,
        "VIDEOGEN_MODEL_SOURCE_COGVIDEOX_2B": "/models/cogvideox",
        "VIDEOGEN_MODEL_SOURCE_WAN2_1_T2V_1_3B": "",
    }
    code = "from videogen import settings; print(settings.VIDEOGEN_MODEL_SOURCES)"
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)

    assert result.stdout.strip() == "{'COGVIDEOX_2B': '/models/cogvideox'}"


def test_an_unknown_model_is_refused_by_name():
    with pytest.raises(UnknownModel, match="sora"):
        model_spec("sora")


def test_it_serves_the_listed_models_in_order(settings):
    settings.VIDEOGEN_MODELS = ["tiny-random-wan", "tiny-random"]

    assert list(served_models()) == ["tiny-random-wan", "tiny-random"]


def test_serving_an_unknown_model_is_a_configuration_error(settings):
    settings.VIDEOGEN_MODELS = ["tiny-random", "sora"]

    with pytest.raises(ImproperlyConfigured, match="sora"):
        served_models()


def test_the_default_model_must_be_served(settings):
    settings.VIDEOGEN_MODELS = ["tiny-random-wan"]

    with pytest.raises(ImproperlyConfigured, match="VIDEOGEN_DEFAULT_MODEL"):
        served_models()


def test_models_can_be_pinned_to_queues(settings):
    settings.VIDEOGEN_MODEL_QUEUES = {"cogvideox-5b": "big-gpus"}

    assert queue_for_model("cogvideox-5b") == "big-gpus"
    assert queue_for_model("tiny-random") is None


def test_a_model_can_have_a_shorter_time_limit(models_file, settings):
    settings.VIDEOGEN_JOB_TIMEOUT = 600
    models_file({"tiny-random": {"timeout": 30}})

    assert job_timeout("tiny-random") == 30
    assert job_timeout("tiny-random-wan") == 600
    assert job_timeout("a-model-since-removed") == 600


def test_a_model_time_limit_above_the_global_one_is_refused(models_file, settings):
    settings.VIDEOGEN_JOB_TIMEOUT = 600
    models_file({"tiny-random": {"timeout": 601}})

    with pytest.raises(ImproperlyConfigured, match="VIDEOGEN_JOB_TIMEOUT"):
        known_models()


def test_a_wake_up_may_run_as_long_as_the_slowest_model_of_its_queue(models_file, settings):
    settings.VIDEOGEN_JOB_TIMEOUT = 600
    settings.VIDEOGEN_MODELS = ["tiny-random", "tiny-random-wan", "cogvideox-2b"]
    settings.VIDEOGEN_MODEL_QUEUES = {"tiny-random-wan": "wan", "cogvideox-2b": "wan"}
    models_file({"tiny-random": {"timeout": 30}, "tiny-random-wan": {"timeout": 60}, "cogvideox-2b": {"timeout": 90}})

    assert (queue_timeout(None), queue_timeout("wan"), queue_timeout("nobody-serves-it")) == (30, 90, 30)


def test_the_queued_task_carries_the_models_time_limit(make_job, models_file, settings):
    from django_q.models import OrmQ

    from jobs.services.lifecycle import job_enqueue

    settings.VIDEOGEN_MODELS = ["tiny-random"]
    models_file({"tiny-random": {"timeout": 45}})

    job_enqueue(make_job())

    assert OrmQ.objects.get().task["timeout"] == 45


def test_answers_are_computed_once_and_again_when_settings_change(monkeypatch):
    reads = []
    real_catalogue = deployment.catalogue
    monkeypatch.setattr(deployment, "catalogue", lambda overrides: reads.append(1) or real_catalogue(overrides))
    deployment.forget()

    for _ in range(3):
        served_models()
        model_spec("tiny-random")
    assert len(reads) == 1

    with override_settings(VIDEOGEN_MODELS=["tiny-random", "tiny-random-wan"]):
        assert list(served_models()) == ["tiny-random", "tiny-random-wan"]
    # Unset, a tiny default model comes with the tiny image models (a model for each mode).
    assert list(served_models()) == ["tiny-random", "tiny-random-i2v", "tiny-random-wan-flf2v"]
    assert len(reads) == 3
