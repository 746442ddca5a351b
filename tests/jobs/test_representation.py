"""
One representation of a job (jobs.representation.job_representation), and
the schema the serializers describe: each answer has exactly the schema's
fields, in its order, each value of its declared type, for jobs in every
state, in a request and in a webhook.
"""

import json
from datetime import timedelta

import jsonschema
import pytest
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIRequestFactory

from jobs.scheduling.estimates import forget_snapshots
from jobs.models import ErrorCode, Status
from jobs.representation import JOB_STATUS_FIELDS, job_representation
from jobs.api.serializers import JobSerializer, JobStatusSerializer, SubmissionSerializer, VideoInfo
from jobs.webhooks.delivery import event_payload

COMPONENTS = {JobSerializer: "Job", JobStatusSerializer: "JobStatus", SubmissionSerializer: "Submission", VideoInfo: "VideoInfo"}


@pytest.fixture(scope="module")
def openapi() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def json_schema(value):
    """OpenAPI 3.0's `nullable` as JSON Schema's null type; the rest is JSON Schema already."""
    if isinstance(value, list):
        return [json_schema(item) for item in value]
    if not isinstance(value, dict):
        return value
    converted = {name: json_schema(item) for name, item in value.items() if name != "nullable"}
    if value.get("nullable"):
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


def validator(openapi: dict, component: str) -> jsonschema.Draft202012Validator:
    document = json_schema(openapi)
    schema = {**document["components"]["schemas"][component], "components": document["components"]}
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


@pytest.fixture
def jobs_in_every_state(make_job, make_completed_job, settings):
    settings.VIDEOGEN_RETENTION_DAYS = 7
    now = timezone.now()
    return [
        make_job(),
        make_job(user_id="bob", negative_prompt="blurry", seed=None, webhook_url="https://example.com/hook",
                 webhook_events=["job.completed", "job.failed"], start_deadline_at=now + timedelta(minutes=5)),
        make_job(status=Status.RUNNING, progress=40, current_step=3, started_at=now - timedelta(seconds=5),
                 first_step_at=now - timedelta(seconds=4), stepped_at=now - timedelta(seconds=1),
                 run_info={"device": "cpu", "source": "/weights/private", "error_detail": "secret"}),
        make_job(status=Status.FAILED, error_code=ErrorCode.OUT_OF_MEMORY, error_message="too big",
                 completed_at=now, run_info={"source": "THUDM/CogVideoX-2b"}),
        make_job(status=Status.CANCELLED, completed_at=now),
        make_completed_job(video_duration_seconds=1.125, guidance_scale=6.0),
        make_completed_job(expired_at=now),
    ]


@pytest.mark.parametrize("serializer_class", list(COMPONENTS), ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("with_request", [True, False], ids=["in a request", "in a webhook"])
def test_each_answer_has_the_schemas_fields_in_order_and_of_their_types(
    serializer_class, with_request, jobs_in_every_state, openapi, settings
):
    settings.VIDEOGEN_PUBLIC_URL = "https://videos.example.com"
    settings.VIDEOGEN_PREVIEW_EVERY = 2
    component = COMPONENTS[serializer_class]
    properties = list(openapi["components"]["schemas"][component]["properties"])
    check = validator(openapi, component)
    context = {"request": APIRequestFactory().get("/api/v1/job/x")} if with_request else {}
    # The list of videos shows only completed jobs whose files are kept.
    jobs = [job for job in jobs_in_every_state if serializer_class is not VideoInfo or job.video]
    for job in jobs:
        forget_snapshots()

        body = serializer_class(job, context=context).data

        assert list(body) == properties
        check.validate(body)


def test_a_list_of_videos_is_each_video_as_alone(make_completed_job):
    jobs = [make_completed_job(), make_completed_job(user_id="bob")]

    listed = VideoInfo(jobs, many=True).data

    assert listed == [VideoInfo(job).data for job in jobs]


def test_links_are_on_the_requests_host_in_a_request_and_on_the_public_url_in_a_webhook(make_completed_job, settings):
    settings.VIDEOGEN_PUBLIC_URL = "https://videos.example.com"
    job = make_completed_job()
    request = APIRequestFactory().get("/api/v1/job/x")

    in_a_request = job_representation(job, request=request)
    in_a_webhook = job_representation(job)

    assert in_a_request["video_url"] == f"http://testserver/api/v1/download/{job.id}"
    assert in_a_webhook["video_url"] == f"https://videos.example.com/api/v1/download/{job.id}"
    assert in_a_request["result"] == in_a_request["video_url"]


def test_a_webhooks_data_is_the_job_as_get_job_shows_it(make_completed_job, settings):
    settings.VIDEOGEN_PUBLIC_URL = "https://videos.example.com"
    job = make_completed_job()
    forget_snapshots()

    data = json.loads(event_payload(job, "job.completed", timezone.now()))["data"]

    assert data == job_representation(job, JOB_STATUS_FIELDS)
    assert list(data) == JOB_STATUS_FIELDS


def test_every_datetime_is_written_the_way_drf_writes_them_in_utc_with_z(make_completed_job, settings, openapi):
    settings.VIDEOGEN_RETENTION_DAYS = 7
    job = make_completed_job(expired_at=timezone.now())

    body = JobStatusSerializer(job).data

    schema = openapi["components"]["schemas"]["JobStatus"]["properties"]
    datetimes = [name for name, prop in schema.items() if prop.get("format") == "date-time" and body[name] is not None]
    assert {"submitted_at", "completed_at", "expires_at", "expired_at"} <= set(datetimes)
    for name in datetimes:
        assert body[name].endswith("Z") and "+00:00" not in body[name], (name, body[name])
