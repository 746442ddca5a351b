"""
API errors come from one place: views raise, and jobs.api.exceptions.error_response
renders every error answer, whether DRF's handler, the middleware or Django's
own handlers made it. And the job endpoints are one viewset whose queryset is
for_user().
"""

import json

import pytest
from django.db import OperationalError
from django.test import RequestFactory
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIRequestFactory

from jobs.api.middleware import body_limit
from jobs.api.middleware import JsonApiErrorsMiddleware
from jobs.models import VideoGenerationJob
from jobs.api.views import JobViewSet

pytestmark = pytest.mark.django_db


def assert_rendered_by_error_response(response, status: int) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json"
    body = json.loads(response.content)
    assert response.content == JSONRenderer().render(body), "the one renderer's bytes"
    return body


def test_errors_from_a_view_from_djangos_handlers_and_from_the_middleware_are_rendered_alike(
    api, make_job, make_completed_job, settings
):
    pending, done = make_job(), make_completed_job()

    from_a_view = api.get(f"/api/v1/job/{pending.id}?user_id=bob")
    with_fields = api.get(f"/api/v1/download/{pending.id}")
    with_a_header = api.get(f"/api/v1/download/{done.id}", HTTP_RANGE="bytes=999999999-")
    from_django = api.get("/api/v1/nothing")
    from_the_middleware = api.post(
        "/api/v1/generate", data=b"x" * (body_limit("/api/v1/generate") + 1), content_type="application/json"
    )

    assert assert_rendered_by_error_response(from_a_view, 404) == {"detail": "No such job."}
    assert assert_rendered_by_error_response(with_fields, 409) == {
        "detail": "The job is pending; its video can be downloaded once it is completed.",
        "job_id": str(pending.id),
        "status": "pending",
    }
    assert set(assert_rendered_by_error_response(with_a_header, 416)) == {"detail"}
    assert with_a_header["Content-Range"] == f"bytes */{done.video.size}"
    assert assert_rendered_by_error_response(from_django, 404) == {"detail": "Not found."}
    assert "the limit is" in assert_rendered_by_error_response(from_the_middleware, 413)["detail"]


def test_the_active_job_cap_is_a_429_with_retry_after(api, make_job, settings):
    settings.VIDEOGEN_MAX_ACTIVE_JOBS_PER_USER = 1
    make_job(user_id="alice")

    response = api.post("/api/v1/generate", {"user_id": "alice", "prompt": "a cat"}, format="json")

    assert "the limit is 1" in assert_rendered_by_error_response(response, 429)["detail"]
    assert response["Retry-After"] == "30"


def test_unavailable_storage_is_a_503_with_retry_after(api, make_completed_job, monkeypatch):
    import jobs.api.views
    from jobs.services.files import StorageUnavailable

    job = make_completed_job()

    def unavailable(stored):
        raise StorageUnavailable("the bucket does not answer")

    monkeypatch.setattr(jobs.api.views, "open_stored", unavailable)
    response = api.get(f"/api/v1/download/{job.id}")

    assert assert_rendered_by_error_response(response, 503) == {
        "detail": "The file storage is unavailable; try again shortly."
    }
    assert response["Retry-After"] == "5"


def test_the_database_down_is_one_answer_from_a_view_and_from_the_middleware(api, make_job, monkeypatch):
    job = make_job()

    def down(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(VideoGenerationJob.objects, "visible", down)
    from_a_view = api.get(f"/api/v1/job/{job.id}")
    from_the_middleware = JsonApiErrorsMiddleware(lambda request: None).process_exception(
        RequestFactory().get("/api/v1/anything"), OperationalError("connection refused")
    )

    for response in (from_a_view, from_the_middleware):
        assert assert_rendered_by_error_response(response, 503) == {
            "detail": "The database is unavailable; try again shortly."
        }
        assert response["Retry-After"] == "5"


@pytest.mark.parametrize(
    "path, name, allow",
    [
        ("/api/v1/generate", "Generate", "POST, OPTIONS"),
        ("/api/v1/job/{id}", "Job", "GET, DELETE, HEAD, OPTIONS"),
        ("/api/v1/job/{id}/cancel", "Cancel", "POST, OPTIONS"),
        ("/api/v1/videos", "Videos", "GET, HEAD, OPTIONS"),
        ("/api/v1/download/{id}", "Download", "GET, HEAD, OPTIONS"),
        ("/api/v1/poster/{id}", "Poster", "GET, HEAD, OPTIONS"),
        ("/api/v1/preview/{id}/", "Preview", "GET, HEAD, OPTIONS"),
    ],
)
def test_options_on_a_job_endpoint_names_it_without_describing_fields(api, make_job, path, name, allow):
    response = api.options(path.format(id=make_job().id))

    assert response.status_code == 200
    assert response["Allow"] == allow
    assert response.json() == {
        "name": name,
        "description": "",
        "renders": ["application/json"],
        "parses": ["application/json"],
    }


@pytest.mark.parametrize("query, user_id", [("?user_id=alice", "alice"), ("", None)])
def test_the_job_viewsets_queryset_is_for_user(query, user_id):
    view = JobViewSet(action_map={"get": "retrieve"}, kwargs={})
    view.request = view.initialize_request(APIRequestFactory().get(f"/api/v1/job/x{query}"))

    assert str(view.get_queryset().query) == str(VideoGenerationJob.objects.for_user(user_id).query)


@pytest.mark.parametrize("accept", ["application/json; indent=4", "*/*; indent=4", "text/html, application/json; indent=4"])
def test_error_bodies_honour_indent_in_accept_as_success_bodies_do(accept, api, make_job, settings):
    job = make_job()

    success = api.get(f"/api/v1/job/{job.id}", HTTP_ACCEPT=accept)
    errors = [
        api.get(f"/api/v1/job/{job.id}?user_id=bob", HTTP_ACCEPT=accept),  # DRF's handler
        api.post("/api/v1/generate", {"user_id": "alice"}, format="json", HTTP_ACCEPT=accept),  # a 400
        api.get("/api/v1/nothing", HTTP_ACCEPT=accept),  # Django's handler404
        api.post(  # the middleware
            "/api/v1/generate", data=b"x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1),
            content_type="application/json", HTTP_ACCEPT=accept,
        ),
    ]

    assert success.status_code == 200
    assert success.content == json.dumps(json.loads(success.content), indent=4, ensure_ascii=False).encode()
    for response in errors:
        assert response.status_code in (400, 404, 413), response.content
        body = json.loads(response.content)
        assert response.content == JSONRenderer().render(body, "application/json; indent=4"), response.content
        assert response.content.startswith(b'{\n    "detail": ')


def test_without_indent_error_bodies_stay_compact(api, db):
    response = api.get("/api/v1/nothing", HTTP_ACCEPT="application/json; q=0.9")

    assert response.content == b'{"detail":"Not found."}'
