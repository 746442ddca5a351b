"""One carrier for the generation parameters: the request, the job and the engine agree on them."""

import pytest

from generation.params import GenerationParams
from generation.pipelines import InvalidParams, check_params
from generation.registry import get_spec
from jobs.models import VideoGenerationJob

TINY = get_spec("tiny-random")

# Digests the code before GenerationParams gave these requests (the same
# validated request, the same digest): Idempotency-Keys sent before keep matching.
FINGERPRINTS = [
    (
        {"user_id": "alice", "prompt": "a cat", "seed": 5},
        "3e93384382877b4fdacef23db22f54bd1d47798538189cde9465652b162e7128",
    ),
    (
        {"user_id": "bob", "prompt": "a dog", "negative_prompt": "blur", "fps": 12, "num_frames": 9, "width": 64,
         "height": 48, "num_inference_steps": 3, "guidance_scale": 2.5},
        "3761b65a5031e213558b58f30115c0d78ced0b33e0433d4105b5d16719318bc0",
    ),
]


@pytest.mark.parametrize("body, digest", FINGERPRINTS)
def test_a_keyed_request_has_the_same_fingerprint_as_before(submit, body, digest):
    response = submit(body, HTTP_IDEMPOTENCY_KEY="order-17")

    assert response.status_code == 202
    assert VideoGenerationJob.objects.get(pk=response.json()["job_id"]).request_fingerprint == digest


def test_the_job_carries_the_parameters_asked_for_to_the_engine(submit):
    body = FINGERPRINTS[1][0]

    response = submit(body, HTTP_IDEMPOTENCY_KEY="order-17")

    params = VideoGenerationJob.objects.get(pk=response.json()["job_id"]).params
    expected = {name: value for name, value in body.items() if name != "user_id"}
    assert {name: getattr(params, name) for name in expected} == expected
    assert params.model_name == "tiny-random" and params.seed is not None


def test_the_engine_refuses_with_the_apis_check():
    params = GenerationParams("a cat", "", 100, 48, 500, 0, 25.0, 1, model_name="tiny-random", fps=0)

    errors = TINY.param_errors(params)
    with pytest.raises(InvalidParams) as refused:
        check_params(TINY, params)

    assert set(errors) == {"width", "num_frames", "num_inference_steps", "guidance_scale", "fps"}
    assert errors["num_frames"] == ["Model tiny-random makes at most 200 frames."]
    for messages in errors.values():
        assert messages[0] in str(refused.value)


def test_the_bounds_shown_are_the_bounds_checked():
    limits = TINY.bounds()

    for name, limit in limits.items():
        at_most = GenerationParams("a cat", "", 64, 48, 9, 2, 4.5, 1, fps=24)
        assert TINY.param_errors(GenerationParams(**{**at_most.as_dict(), name: limit["max"]})) == {}
        assert name in TINY.param_errors(GenerationParams(**{**at_most.as_dict(), name: limit["max"] + 1}))
