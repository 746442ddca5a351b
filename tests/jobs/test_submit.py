import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.db import connection, transaction
from django_q.models import OrmQ

from generation.params import GenerationParams
from jobs.api.middleware import body_limit
from jobs.services.lifecycle import job_create
from jobs.models import Status, VideoGenerationJob
from tests.support.jobs import FAST_JOB

PARAMS = {"prompt": "a cat", "negative_prompt": "", "model_name": "tiny-random", "guidance_scale": 4.5, "seed": 1,
          **FAST_JOB}

ROOT = Path(__file__).resolve().parents[2]
SEED_EXAMPLE = {"user_id": "user123", "prompt": "A beautiful sunset over mountains", "fps": 24}


def test_the_seed_example_is_accepted_and_answers_the_original_shape(submit):
    response = submit(SEED_EXAMPLE)

    assert response.status_code == 202
    body = response.json()
    assert body["success"] is True
    assert body["message"] == "Generation job submitted successfully"
    assert body["status"] == "pending"
    assert body["user_id"] == "user123"
    job = VideoGenerationJob.objects.get(pk=body["job_id"])
    assert response["Location"].endswith(f"/api/v1/job/{job.id}")
    assert (job.user_id, job.prompt, job.fps, job.status) == ("user123", SEED_EXAMPLE["prompt"], 24, Status.PENDING)


@pytest.mark.parametrize("trusted, scheme", [(False, "http"), (True, "https")])
def test_links_say_https_behind_a_tls_proxy_only_when_its_forwarded_proto_is_trusted(submit, settings, trusted,
                                                                                      scheme):
    # As settings.py sets it from VIDEOGEN_TRUST_X_FORWARDED_PROTO (tested below).
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if trusted else None
    settings.ALLOWED_HOSTS = ["videos.example.com"]

    response = submit(SEED_EXAMPLE, HTTP_HOST="videos.example.com", HTTP_X_FORWARDED_PROTO="https")

    assert response["Location"].startswith(f"{scheme}://videos.example.com/api/v1/job/")


@pytest.mark.parametrize("value, header", [("true", "('HTTP_X_FORWARDED_PROTO', 'https')"), ("false", "None")])
def test_the_forwarded_proto_is_trusted_only_when_the_environment_says_so(value, header):
    code = "from django.conf import settings; settings.configure(); " \
           "import videogen.settings as s; print(getattr(s, 'SECURE_PROXY_SSL_HEADER', None))"
    env = {**os.environ, "VIDEOGEN_TRUST_X_FORWARDED_PROTO": value}
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)

    assert result.stdout.strip() == header


def test_it_queues_one_task_once_the_row_is_committed(submit):
    response = submit(SEED_EXAMPLE)

    [queued] = OrmQ.objects.all()
    assert queued.func() == "generation.tasks.generate_video"
    assert queued.task["args"] == (response.json()["job_id"], "user123")


class RolledBack(Exception):
    pass


def test_nothing_is_queued_when_the_transaction_does_not_commit(db):
    with pytest.raises(RolledBack), transaction.atomic():
        job_create(user_id="alice", params=GenerationParams(**PARAMS))
        raise RolledBack

    assert (VideoGenerationJob.objects.count(), OrmQ.objects.count()) == (0, 0)


def seen_from_another_connection() -> tuple[int, int]:
    """(jobs, queued wake-ups) as a worker would see them: from another thread, so another connection."""
    seen = []

    def look():
        try:
            seen.append((VideoGenerationJob.objects.count(), OrmQ.objects.count()))
        finally:
            connection.close()

    thread = threading.Thread(target=look)
    thread.start()
    thread.join()
    return seen[0]


def test_a_worker_sees_the_wake_up_only_with_the_committed_job(transactional_db):
    with transaction.atomic():
        job_create(user_id="alice", params=GenerationParams(**PARAMS))
        before_commit = seen_from_another_connection()

    assert before_commit == (0, 0)
    assert seen_from_another_connection() == (1, 1)


def test_defaults_are_the_originals_and_the_models(submit):
    body = submit({"user_id": "u", "prompt": "p"}).json()

    assert body["fps"] == 24
    assert body["num_frames"] == 36
    assert body["num_inference_steps"] == 50
    assert body["guidance_scale"] == 4.5
    assert (body["model"], body["width"], body["height"]) == ("tiny-random", 240, 160)


def test_a_seed_is_always_recorded(submit):
    chosen = submit({"user_id": "u", "prompt": "p"}).json()["seed"]
    given = submit({"user_id": "u", "prompt": "p", "seed": 1234}).json()["seed"]

    assert isinstance(chosen, int) and chosen >= 0
    assert given == 1234


def test_every_parameter_given_is_kept(submit):
    request = {
        "user_id": "u",
        "prompt": "a dog",
        "negative_prompt": "blurry",
        "model": "tiny-random",
        "fps": 12,
        "num_frames": 17,
        "width": 128,
        "height": 96,
        "num_inference_steps": 20,
        "guidance_scale": 6.0,
        "seed": 99,
    }

    submit(request)

    job = VideoGenerationJob.objects.get()
    assert job.negative_prompt == "blurry"
    assert (job.fps, job.num_frames, job.width, job.height) == (12, 17, 128, 96)
    assert (job.num_inference_steps, job.guidance_scale, job.seed) == (20, 6.0, 99)


def test_user_id_and_prompt_are_stripped(submit):
    submit({"user_id": "  user123 ", "prompt": "\n a cat \t"})

    job = VideoGenerationJob.objects.get()
    assert (job.user_id, job.prompt) == ("user123", "a cat")


def test_a_user_id_of_100_characters_is_accepted(submit):
    assert submit({"user_id": "u" * 100, "prompt": "p"}).status_code == 202


def test_the_original_clients_num_videos_per_prompt_of_one_is_accepted(submit):
    assert submit({**SEED_EXAMPLE, "num_videos_per_prompt": 1}).status_code == 202


@pytest.mark.parametrize(
    "change, field, message",
    [
        ({"user_id": None}, "user_id", "may not be null"),
        ({"user_id": ""}, "user_id", "may not be blank"),
        ({"user_id": "   "}, "user_id", "may not be blank"),
        ({"user_id": "u" * 101}, "user_id", "no more than 100"),
        ({"user_id": "bad\x00id"}, "user_id", "Null characters"),
        ({"user_id": "bad\nid"}, "user_id", "control characters"),
        ({"user_id": "bad\u202eid"}, "user_id", "control characters"),
        ({"user_id": 123}, "user_id", "valid string"),
        ({"prompt": ""}, "prompt", "may not be blank"),
        ({"prompt": ["a", "b"]}, "prompt", "valid string"),
        ({"prompt": "x" * 2001}, "prompt", "no more than 2000"),
        ({"negative_prompt": "x" * 2001}, "negative_prompt", "no more than 2000"),
        ({"fps": 0}, "fps", "greater than or equal to 1"),
        ({"fps": 61}, "fps", "less than or equal to 60"),
        ({"fps": "fast"}, "fps", "valid integer"),
        ({"fps": 24.5}, "fps", "valid integer"),
        ({"fps": True}, "fps", "valid integer"),
        ({"num_frames": 0}, "num_frames", "greater than or equal to 1"),
        ({"num_frames": 201}, "num_frames", "less than or equal to 200"),
        ({"num_inference_steps": 201}, "num_inference_steps", "less than or equal to 200"),
        ({"guidance_scale": 0}, "guidance_scale", "greater than or equal to 0.1"),
        ({"guidance_scale": 20.5}, "guidance_scale", "less than or equal to 20"),
        ({"seed": -1}, "seed", "greater than or equal to 0"),
        ({"seed": 2**64}, "seed", "less than or equal to"),
        ({"num_videos_per_prompt": 2}, "num_videos_per_prompt", "submit several jobs"),
        ({"num_videos_per_prompt": 0}, "num_videos_per_prompt", "greater than or equal to 1"),
        ({"model": "sora"}, "model", "serves: tiny-random"),
        ({"width": 100}, "width", "multiple of 16"),
        ({"height": 8}, "height", "between 32 and 512"),
        ({"width": 4096}, "width", "between 32 and 512"),
    ],
)
def test_bad_input_is_a_400_that_names_the_field(submit, change, field, message):
    response = submit({**SEED_EXAMPLE, **change})

    assert response.status_code == 400
    body = response.json()
    assert field in body["errors"]
    assert message in " ".join(body["errors"][field])
    assert field in body["detail"]
    assert VideoGenerationJob.objects.count() == 0


def test_missing_required_fields_are_named(submit):
    body = submit({}).json()

    assert set(body["errors"]) == {"user_id", "prompt"}


def test_a_models_tighter_bounds_win_with_a_message_that_says_so(submit, settings):
    settings.VIDEOGEN_MODELS = ["tiny-random", "cogvideox-2b"]

    response = submit({**SEED_EXAMPLE, "model": "cogvideox-2b", "num_frames": 60})

    assert response.status_code == 400
    assert response.json()["errors"]["num_frames"] == ["Model cogvideox-2b makes at most 49 frames."]


def test_a_model_not_served_here_is_refused(submit):
    response = submit({**SEED_EXAMPLE, "model": "cogvideox-2b"})

    assert response.status_code == 400
    assert "cogvideox-2b" in response.json()["errors"]["model"][0]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused(api, db, value):
    raw = json.dumps(SEED_EXAMPLE)[:-1] + f', "guidance_scale": {value}}}'

    response = api.post("/api/v1/generate", raw, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["detail"]


def test_malformed_json_is_a_json_400(api, db):
    response = api.post("/api/v1/generate", '{"user_id": "u", ', content_type="application/json")

    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]


def test_deeply_nested_json_is_a_400_not_a_crash(api, db):
    response = api.post("/api/v1/generate", "[" * 30000 + "]" * 30000, content_type="application/json")

    assert response.status_code == 400
    assert "nested too deeply" in response.json()["detail"]


@pytest.mark.parametrize(
    "extra, field",
    [
        ('"guidance_scale": 1e400', "guidance_scale"),
        ('"num_frames": 1e400', "num_frames"),
        ('"seed": 1e30', "seed"),
        ('"fps": "' + "9" * 5000 + '"', "fps"),
        ('"user_id": {"a": 1}', "user_id"),
        ('"prompt": "lone surrogate \\ud800"', "prompt"),
    ],
)
def test_hostile_values_are_400s_naming_the_field(api, db, extra, field):
    raw = '{"user_id": "u", "prompt": "p", ' + extra + "}"

    response = api.post("/api/v1/generate", raw, content_type="application/json")

    assert response.status_code == 400
    assert field in response.json()["errors"]


def test_a_json_body_that_is_not_an_object_is_a_400(api, db):
    response = api.post("/api/v1/generate", "[1, 2]", content_type="application/json")

    assert response.status_code == 400
    assert "Invalid data" in response.json()["detail"]


def test_a_form_body_is_a_json_415(api, db):
    response = api.post("/api/v1/generate", "user_id=u&prompt=p", content_type="application/x-www-form-urlencoded")

    assert response.status_code == 415
    assert "Unsupported media type" in response.json()["detail"]


def test_an_oversized_body_is_a_json_413_and_creates_nothing(api, db, settings):
    body = json.dumps({**SEED_EXAMPLE, "prompt": "x" * (body_limit("/api/v1/generate") + 1)})

    response = api.post("/api/v1/generate", body, content_type="application/json")

    assert response.status_code == 413
    assert "limit" in response.json()["detail"]
    assert VideoGenerationJob.objects.count() == 0


def test_get_on_generate_is_a_json_405(api, db):
    response = api.get("/api/v1/generate")

    assert response.status_code == 405
    assert response.json()["detail"]


def test_the_trailing_slash_is_optional(api, db):
    response = api.post("/api/v1/generate/", SEED_EXAMPLE, format="json")

    assert response.status_code == 202


def test_a_submit_whose_wake_up_cannot_be_written_is_refused_whole(api, db, monkeypatch, settings):
    from django.db import OperationalError

    if settings.REDIS_URL:
        pytest.skip("the ORM broker's (with Redis, a refused wake-up fails the job: test_lifecycle)")

    def refuse(*args, **kwargs):
        raise OperationalError("the database went away")

    # The ORM broker's wake-up is written in the job's transaction: no job
    # without it, and the client is told to retry, not given a job id.
    monkeypatch.setattr("jobs.services.lifecycle.wake_up", refuse)
    response = api.post("/api/v1/generate", SEED_EXAMPLE, format="json")

    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    assert (VideoGenerationJob.objects.count(), OrmQ.objects.count()) == (0, 0)
