"""
Input a careless or hostile client sends: every answer is a JSON 4xx that
names the problem, never a 5xx and never a wider view than asked for.
"""

import base64
import uuid
from datetime import timedelta
from urllib.parse import quote, urlencode

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from jobs.api.views import VIDEOS_PARAMS
from jobs.models import Status

pytestmark = pytest.mark.django_db

FUZZ = hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def assert_json_error(response, status: int | tuple = 400):
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, (response.status_code, response.content[:300])
    assert response["Content-Type"] == "application/json"
    return response.json()


# --- Responses under /api/ are JSON --------------------------------------------------


@pytest.mark.parametrize("host", ["evil.com", "127.0.0.1.evil.com", "localhost.evil.com", "a b", "[::2]"])
@pytest.mark.parametrize("path", ["/api/v1/health", "/api/v1/videos", "/api/v1/schema", "/api/v1/docs"])
def test_a_foreign_host_header_is_refused_in_json(api, host, path):
    body = assert_json_error(api.get(path, HTTP_HOST=host))

    assert body == {"detail": "This server does not answer to the Host header given."}


@pytest.mark.parametrize("path", ["/api/v1/videos", "/api/v1/health", "/api/v1/job/x", "/api/v1/schema", "/api/v1/docs"])
def test_more_query_parameters_than_django_takes_is_a_json_400(api, settings, path):
    query = "&".join(f"p{number}=1" for number in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1))

    body = assert_json_error(api.get(f"{path}?{query}"))

    assert body["detail"] == "Too many query parameters or form fields."


@pytest.mark.parametrize(
    "method, path, query, accept",
    [
        ("get", "/api/v1/schema", "format=xml", None),
        ("get", "/api/v1/schema", "", "text/html"),
        ("post", "/api/v1/schema", "", None),
        ("delete", "/api/v1/schema", "", None),
        ("post", "/api/v1/docs", "", None),
        ("get", "/api/v1/docs", "format=json", None),
        ("get", "/api/v1/docs", "", "application/xml"),
        ("put", "/api/v1/docs", "", None),
    ],
)
def test_errors_from_the_schema_and_the_docs_are_json(api, method, path, query, accept):
    headers = {"HTTP_ACCEPT": accept} if accept else {}

    body = assert_json_error(getattr(api, method)(f"{path}?{query}", **headers), (404, 405, 406))

    assert set(body) == {"detail"}


@pytest.mark.parametrize("path", ["/api/v1/docs", "/api/v1/schema"])
def test_options_on_the_schema_and_the_docs_is_json(api, db, path):
    response = api.options(path)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"


# --- Cursors and page_size -----------------------------------------------------------


def cursor(querystring: str) -> str:
    return base64.b64encode(querystring.encode()).decode()


@pytest.fixture
def two_videos(make_job):
    for minutes in (1, 2):
        make_job(status=Status.COMPLETED, completed_at=timezone.now() - timedelta(minutes=minutes), video="videos/x.mp4")


@pytest.mark.parametrize(
    "position",
    ["notadate", "2020-13-45 00:00:00", "2020-02-30T00:00:00", "\x00", "9999-12-31T23:59:59-14:00",
     "0001-01-01T00:00:00+14:00", "2020-01-01T25:00:00", "x" * 5000],
)
def test_a_cursor_with_an_invalid_position_is_a_400_naming_the_cursor(api, two_videos, position):
    body = assert_json_error(api.get("/api/v1/videos", {"cursor": cursor(urlencode({"p": position}))}))

    assert body["errors"] == {"cursor": ["Invalid cursor."]}


@pytest.mark.slow
@given(
    tokens=st.dictionaries(
        st.sampled_from(["o", "r", "p", "x"]),
        st.one_of(st.text(max_size=40), st.integers().map(str), st.datetimes().map(str)),
    )
)
@FUZZ
def test_any_decodable_cursor_is_a_page_or_a_400(api, two_videos, tokens):
    response = api.get("/api/v1/videos", {"cursor": cursor(urlencode(tokens))})

    assert response.status_code in (200, 400), response.content[:300]


def test_a_cursor_this_api_made_still_works(api, two_videos, settings):
    settings.VIDEOGEN_PAGE_SIZE = 1
    first = api.get("/api/v1/videos").json()

    second = api.get(first["next"])

    assert second.status_code == 200
    assert len(second.json()["videos"]) == 1
    assert second.json()["videos"] != first["videos"]


@pytest.mark.parametrize("page_size", ["\u0663", "\u00b2", "\uff11", "1\u0661", "0", "00", "-1", "1.5", "", " 1", "1e3", "+1"])
def test_page_size_in_anything_but_ascii_digits_is_a_400(api, db, page_size):
    body = assert_json_error(api.get("/api/v1/videos", {"page_size": page_size}))

    assert body["errors"] == {"page_size": ["page_size must be a positive integer."]}


@pytest.mark.parametrize("digits", [5000, 100_000])
def test_a_page_size_thousands_of_digits_long_means_the_largest_page(api, two_videos, settings, digits):
    settings.VIDEOGEN_MAX_PAGE_SIZE = 1

    response = api.get("/api/v1/videos", {"page_size": "9" * digits})

    assert response.status_code == 200
    assert len(response.json()["videos"]) == 1


def test_leading_zeros_in_page_size_are_still_the_number(api, two_videos):
    assert len(api.get("/api/v1/videos", {"page_size": "0001"}).json()["videos"]) == 1


# --- user_id placement ---------------------------------------------------------------

PER_USER_PATHS = ["/api/v1/job/{id}", "/api/v1/videos", "/api/v1/download/{id}", "/api/v1/poster/{id}", "/api/v1/preview/{id}"]


@pytest.mark.parametrize("param", ["USER_ID", "user_id[]", "userid", "user", "User_Id", "user_id ", "uid", "cursor"])
@pytest.mark.parametrize("path", PER_USER_PATHS)
def test_an_unknown_query_parameter_on_a_per_user_endpoint_is_a_400_naming_it(api, make_job, param, path):
    job = make_job(user_id="bob")

    body = assert_json_error(api.get(path.format(id=job.id) + f"?{quote(param)}=alice"))

    assert list(body["errors"]) == [param]
    assert param in body["detail"]


@pytest.mark.parametrize("param", ["USER_ID", "user_id[]"])
def test_an_unknown_query_parameter_on_cancel_is_a_400_and_cancels_nothing(api, make_job, param):
    job = make_job(user_id="bob")

    assert_json_error(api.post(f"/api/v1/job/{job.id}/cancel?{quote(param)}=alice"))

    job.refresh_from_db()
    assert job.status == Status.PENDING


@pytest.mark.parametrize("path", PER_USER_PATHS)
def test_user_id_given_twice_is_a_400(api, make_job, path):
    job = make_job(user_id="bob")

    body = assert_json_error(api.get(path.format(id=job.id) + "?user_id=bob&user_id=alice"))

    assert list(body["errors"]) == ["user_id"]


def test_cancel_honours_a_user_id_given_only_in_the_json_body(api, make_job):
    job = make_job(user_id="bob")
    missing = api.post(f"/api/v1/job/{uuid.uuid4()}/cancel", {"user_id": "alice"}, format="json")

    foreign = api.post(f"/api/v1/job/{job.id}/cancel", {"user_id": "alice"}, format="json")

    assert foreign.status_code == missing.status_code == 404
    assert foreign.content == missing.content
    job.refresh_from_db()
    assert job.status == Status.PENDING


def test_cancel_with_the_owners_user_id_in_the_body_cancels(api, make_job):
    job = make_job(user_id="bob")

    response = api.post(f"/api/v1/job/{job.id}/cancel", {"user_id": " bob "}, format="json")

    assert response.status_code == 200
    job.refresh_from_db()
    assert job.status == Status.CANCELLED


@pytest.mark.parametrize("query, body", [("bob", "alice"), ("alice", "bob"), ("bob", "bobby")])
def test_cancel_with_user_ids_in_query_and_body_that_differ_is_a_400(api, make_job, query, body):
    job = make_job(user_id="bob")

    answer = assert_json_error(api.post(f"/api/v1/job/{job.id}/cancel?user_id={query}", {"user_id": body}, format="json"))

    assert list(answer["errors"]) == ["user_id"]
    job.refresh_from_db()
    assert job.status == Status.PENDING


@pytest.mark.parametrize(
    "body, field",
    [({"user_id": 1}, "user_id"), ({"user_id": None}, "user_id"), ({"user_id": ""}, "user_id"),
     ({"user_id": ["bob"]}, "user_id"), ({"USER_ID": "bob"}, "USER_ID"), ([], "non_field_errors")],
)
def test_cancel_with_a_body_that_is_not_a_user_id_is_a_400(api, make_job, body, field):
    job = make_job(user_id="bob")

    answer = assert_json_error(api.post(f"/api/v1/job/{job.id}/cancel", body, format="json"))

    assert field in answer["errors"]
    job.refresh_from_db()
    assert job.status == Status.PENDING


def test_submit_with_a_different_user_id_in_the_query_is_a_400(api, db):
    body = assert_json_error(api.post("/api/v1/generate?user_id=bob", {"user_id": "alice", "prompt": "p"}, format="json"))

    assert list(body["errors"]) == ["user_id"]


@pytest.mark.slow
@given(
    params=st.lists(
        st.tuples(st.text(min_size=1, max_size=12), st.text(max_size=12)), min_size=1, max_size=4
    # At least one parameter neither path takes. Hypothesis also draws the project's own string
    # constants, so it does offer /videos' real ones (`cursor=` alone is its first page, a 200).
    ).filter(lambda pairs: any(name not in VIDEOS_PARAMS for name, _ in pairs))
)
@FUZZ
def test_no_query_string_widens_a_users_view_of_jobs(api, make_job, params):
    foreign = make_job(user_id="bob")
    query = urlencode(params + [("user_id", "alice")])

    for path in (f"/api/v1/job/{foreign.id}", "/api/v1/videos"):
        response = api.get(f"{path}?{query}")

        assert response.status_code in (400, 404), (path, query, response.content[:300])
        assert response["Content-Type"] == "application/json"


# --- Types ---------------------------------------------------------------------------

NUMERIC_FIELDS = ["fps", "num_frames", "width", "height", "num_inference_steps", "guidance_scale", "seed",
                  "num_videos_per_prompt"]


@pytest.mark.parametrize("value", [True, False])
@pytest.mark.parametrize("field", NUMERIC_FIELDS)
def test_a_json_boolean_is_not_a_number(api, db, field, value):
    body = assert_json_error(
        api.post("/api/v1/generate", {"user_id": "alice", "prompt": "p", field: value}, format="json")
    )

    assert list(body["errors"]) == [field]


# --- Internal details ----------------------------------------------------------------


@pytest.mark.parametrize(
    "source, shown",
    [("THUDM/CogVideoX-2b", True), ("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", True), ("/models/CogVideoX-2b", False),
     ("generation.tiny.build_tiny_cogvideox", False), ("/root/.cache/huggingface/hub/models--x--y/snapshots/abc", False),
     ("C:\\models\\x", False), ("../secret/x", False), ("./x/y", False)],
)
def test_run_info_shows_clients_a_public_repo_id_but_no_path_or_builder(api, make_job, source, shown):
    job = make_job(run_info={"model": "tiny-random", "source": source, "dtype": "float32", "error_detail": "OSError: /x"})

    run_info = api.get(f"/api/v1/job/{job.id}").json()["run_info"]

    assert ("source" in run_info) is shown
    assert "error_detail" not in run_info
    assert run_info["dtype"] == "float32"
    job.refresh_from_db()
    assert job.run_info["source"] == source
