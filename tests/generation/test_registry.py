import json

import pytest
from django.core.exceptions import ImproperlyConfigured

from generation import registry
from generation.registry import UnknownModel, get_spec, queue_for_model, served_models


@pytest.fixture
def models_file(settings, tmp_path):
    def write(content) -> None:
        path = tmp_path / "models.json"
        path.write_text(json.dumps(content) if not isinstance(content, str) else content)
        settings.VIDEOGEN_MODELS_FILE = str(path)
        registry._registry.cache_clear()

    yield write
    registry._registry.cache_clear()


def test_it_ships_the_real_models_and_their_tiny_twins():
    assert {"cogvideox-2b", "cogvideox-5b", "wan2.1-t2v-1.3b", "tiny-random", "tiny-random-wan"} <= set(
        registry.registry()
    )
    assert get_spec("cogvideox-2b").pipeline_class == get_spec("tiny-random").pipeline_class == "CogVideoXPipeline"
    assert get_spec("wan2.1-t2v-1.3b").pipeline_class == get_spec("tiny-random-wan").pipeline_class == "WanPipeline"


@pytest.mark.parametrize("asked, generated", [(1, 1), (2, 5), (36, 37), (80, 81), (81, 81)])
def test_wan_frame_counts_round_up_to_4k_plus_1(asked, generated):
    assert get_spec("wan2.1-t2v-1.3b").valid_frame_count(asked) == generated


def test_a_models_file_changes_a_builtin_spec(models_file):
    models_file({"cogvideox-2b": {"source": "/models/cogvideox", "enable_model_cpu_offload": True}})

    spec = get_spec("cogvideox-2b")

    assert (spec.source, spec.enable_model_cpu_offload, spec.max_frames) == ("/models/cogvideox", True, 49)


def test_a_models_file_adds_a_model(models_file):
    models_file(
        {"my-cogvideox": {"description": "fine-tuned", "pipeline_class": "CogVideoXPipeline", "source": "/m/x"}}
    )

    assert get_spec("my-cogvideox").source == "/m/x"


@pytest.mark.parametrize(
    "content, message",
    [
        ({"cogvideox-2b": {"weights": "/x"}}, "unknown fields"),
        ({"cogvideox-2b": "nope"}, "must map to an object"),
        ({"new-model": {"source": "/x"}}, "new-model"),
        ("{not json", "cannot be read"),
        ({"cogvideox-2b": {"cache": "magic"}}, "cache must be one of"),
    ],
)
def test_a_bad_models_file_is_refused_with_a_clear_message(models_file, content, message):
    models_file(content)

    with pytest.raises(ImproperlyConfigured, match=message):
        registry.registry()


def test_an_environment_variable_sets_one_models_weights(monkeypatch):
    monkeypatch.setenv("VIDEOGEN_MODEL_SOURCE_WAN2_1_T2V_1_3B", "/models/wan")

    assert get_spec("wan2.1-t2v-1.3b").source == "/models/wan"


def test_an_unknown_model_names_the_known_ones():
    with pytest.raises(UnknownModel, match="known models: .*tiny-random"):
        get_spec("sora")


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

    assert registry.job_timeout("tiny-random") == 30
    assert registry.job_timeout("tiny-random-wan") == 600


def test_a_model_time_limit_above_the_global_one_is_refused(models_file, settings):
    settings.VIDEOGEN_JOB_TIMEOUT = 600
    models_file({"tiny-random": {"timeout": 601}})

    with pytest.raises(ImproperlyConfigured, match="VIDEOGEN_JOB_TIMEOUT"):
        registry.registry()


def test_the_queued_task_carries_the_models_time_limit(make_job, models_file, settings):
    from django_q.models import OrmQ

    from jobs.services import job_enqueue

    models_file({"tiny-random": {"timeout": 45}})

    job_enqueue(make_job())

    assert OrmQ.objects.get().task["timeout"] == 45
