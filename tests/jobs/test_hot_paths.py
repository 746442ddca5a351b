"""
The status poll's lean path: the job is written out by one function
(jobs.representation; tests/jobs/test_representation.py checks it against
the schema) instead of DRF's generic per-field path, and GET /job reads the
job in one query. What guards it here: a poll costs a fixed, small number
of queries.
"""

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIRequestFactory

from jobs.models import Status
from jobs.api.serializers import GenerationRequest

# CI's Redis leg runs this file again, its enqueues going through Redis.
pytestmark = pytest.mark.broker


@pytest.mark.parametrize("status", [Status.PENDING, Status.RUNNING, Status.COMPLETED])
@pytest.mark.parametrize("user_id", ["alice", None], ids=["one user's", "unfiltered"])
def test_a_status_poll_is_one_query_for_the_job(api, make_job, status, user_id):
    job = make_job(status=status)
    query = f"?user_id={user_id}" if user_id else ""
    # The queue's snapshot and the duration history are per process and
    # rebuilt every few seconds; the poll itself reads only the job, and for
    # a pending one whether the deployment stored a newer snapshot (so that
    # every process answers alike).
    api.get(f"/api/v1/job/{job.id}{query}")

    with CaptureQueriesContext(connection) as queries:
        response = api.get(f"/api/v1/job/{job.id}{query}")

    assert response.status_code == 200
    job_reads = [q["sql"] for q in queries.captured_queries if '"video_generation_jobs"' in q["sql"]]
    assert len(job_reads) == 1, job_reads
    others = [q["sql"] for q in queries.captured_queries if q["sql"] not in job_reads]
    if status == Status.PENDING:
        assert len(others) == 1 and '"video_generation_queue_snapshots"' in others[0], others
    else:
        assert others == []


def test_visible_is_for_user_then_the_id(make_job):
    from jobs.models import VideoGenerationJob

    alices, bobs = make_job(user_id="alice"), make_job(user_id="bob")

    assert VideoGenerationJob.objects.visible("alice", alices.id) == alices
    assert VideoGenerationJob.objects.visible("alice", bobs.id) is None
    assert VideoGenerationJob.objects.visible(None, bobs.id) == bobs
    assert VideoGenerationJob.objects.visible("bob", bobs.id).run_info == {}
    with pytest.raises(TypeError):
        VideoGenerationJob.objects.filter(status=Status.PENDING).visible("alice", alices.id)


def test_the_compiled_active_count_is_the_orms_count(make_job):
    from jobs.models import VideoGenerationJob

    for status in Status:
        make_job(user_id="alice", status=status)
        make_job(user_id="alice", status=status)
    make_job(user_id="bob", status=Status.RUNNING)

    for user_id in ["alice", "bob", "carol"]:
        orms_count = VideoGenerationJob.objects.for_user(user_id).active().count()
        assert VideoGenerationJob.objects.active_count(user_id) == orms_count
    assert VideoGenerationJob.objects.active_count("alice") == 4
    assert VideoGenerationJob.objects.active_count("carol") == 0
    with pytest.raises(TypeError):
        VideoGenerationJob.objects.filter(status=Status.PENDING).active_count("alice")


def test_the_compiled_insert_stores_what_the_orms_create_stores(db):
    from django.db import IntegrityError, transaction

    from jobs.models import VideoGenerationJob

    now = timezone.now()
    values = dict(
        user_id="alice", prompt="a cat", negative_prompt="blurry", model_name="tiny-random", fps=8, num_frames=9,
        width=64, height=48, num_inference_steps=3, guidance_scale=4.5, seed=None, status=Status.COMPLETED,
        progress=100, current_step=3, error_message="", attempts=2, queued_at=now, worker="host:1", heartbeat_at=now,
        run_info={"device": "cpu", "steps": [1, 2]}, video="videos/a.mp4", poster="posters/a.jpg",
        idempotency_key="key-1", request_fingerprint="f" * 64, file_size_bytes=1234, video_duration_seconds=1.125,
        submitted_at=now - timedelta(minutes=1), started_at=now - timedelta(seconds=30), completed_at=now,
        webhook_url="https://example.com/hook", webhook_events=["job.completed"],
    )
    by_the_orm = VideoGenerationJob.objects.create(**values)
    compiled = VideoGenerationJob.objects.insert(VideoGenerationJob(**{**values, "idempotency_key": "key-2"}))

    assert not compiled._state.adding and compiled._state.db == "default"
    read_back = [VideoGenerationJob.objects.values().get(pk=job.pk) for job in (by_the_orm, compiled)]
    for row in read_back:
        del row["id"]
    assert read_back[0] == {**read_back[1], "idempotency_key": "key-1"}
    with pytest.raises(IntegrityError), transaction.atomic():
        VideoGenerationJob.objects.insert(VideoGenerationJob(**values))


def test_each_submit_validates_with_its_own_copy_of_the_fields(db):
    first, second = GenerationRequest(data={}), GenerationRequest(data={})

    assert all(first.fields[name] is not second.fields[name] for name in first.fields)
    assert first.fields["webhook_events"].child.parent is first.fields["webhook_events"]
    assert first.fields["prompt"].parent is first and second.fields["prompt"].parent is second


def test_submits_validated_at_once_in_threads_get_their_own_answers(db, settings):
    settings.VIDEOGEN_WEBHOOK_SECRET = "whsec_" + "a" * 32
    requests = [
        {"user_id": "alice", "prompt": "a cat", "num_frames": 9},
        {"user_id": "bob", "prompt": "a dog", "fps": 0},
        {"user_id": "carol", "prompt": 7, "webhook_events": ["job.completed"]},
        {"user_id": "dave", "prompt": "a bird", "webhook_url": "http://127.0.0.1/", "webhook_events": ["nope"]},
    ]

    def answer(data: dict):
        serializer = GenerationRequest(data=data)
        return serializer.validated_data if serializer.is_valid() else serializer.errors

    expected = [answer(data) for data in requests]
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(answer, requests * 200))

    assert answers == expected * 200
    assert "fps" in expected[1] and "prompt" in expected[2] and "webhook_events" in expected[3]


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "application/json; indent=2", "text/html",
                                    "application/*", "", "video/mp4"])
@pytest.mark.parametrize("query", ["", "&format=json", "&format=api"])
def test_the_quick_negotiation_answers_as_drfs_own(accept, query, make_job, settings):
    from rest_framework.negotiation import DefaultContentNegotiation
    from rest_framework.renderers import JSONRenderer
    from rest_framework.request import Request

    from jobs.api.http import JsonFirstNegotiation

    request = Request(APIRequestFactory().get(f"/api/v1/job/x?user_id=a{query}", **({"HTTP_ACCEPT": accept} if accept is not None else {})))

    def answer(negotiation):
        try:
            renderer, media_type = negotiation.select_renderer(request, [JSONRenderer()])
            return type(renderer), media_type
        except Exception as exc:
            return type(exc)

    assert answer(JsonFirstNegotiation()) == answer(DefaultContentNegotiation())


def _statement(sql: str) -> str:
    """A query's kind and table, enough to tell one round trip from another."""
    words = sql.replace('"', "").split()
    if words[0] == "INSERT":
        return f"INSERT {words[2]}"
    if "pg_advisory_xact_lock" in sql and "COUNT(" in sql:
        return f"LOCK user, then COUNT {words[words.index('FROM') + 1]}"
    if "pg_advisory_xact_lock" in sql:
        return "LOCK user"
    if words[0] == "SELECT" and "COUNT(" in sql.upper():
        return f"COUNT {words[words.index('FROM') + 1]}"
    return " ".join(words[:3])


def test_a_submit_is_a_lock_and_a_count_an_insert_and_a_wake_up(
    api, db, django_capture_on_commit_callbacks, settings, submits_counted_in_memory
):
    # As a server counts submits: in memory, written later by a thread of its
    # own (tests/test_metrics.py), which sleeps past this test.
    submits_counted_in_memory()
    body = {"user_id": "alice", "prompt": "a cat", "width": 64, "height": 64, "num_frames": 9}
    api.post("/api/v1/generate", body, format="json")

    with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks(execute=True):
        response = api.post("/api/v1/generate", body, format="json")

    assert response.status_code == 202
    expected = [
        # One round trip on PostgreSQL: the count is a statement of its own after the lock.
        "LOCK user, then COUNT video_generation_jobs" if connection.vendor == "postgresql" else "COUNT video_generation_jobs",
        "INSERT video_generation_jobs",
        *([] if settings.REDIS_URL else ["INSERT django_q_ormq"]),
    ]
    # (The ORM broker's wake-up is written in the job's own transaction;
    # the metric count's write, on PostgreSQL, is committed without waiting
    # for the disk: tested below.)
    # Savepoints: the test's own transaction around the request's (outside a
    # test, a BEGIN and a COMMIT, which are not captured).
    statements = [_statement(q["sql"]) for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert statements == expected


def test_submits_share_one_redis_connection(api, db, django_capture_on_commit_callbacks, settings):
    if not settings.REDIS_URL:
        pytest.skip("the Redis broker (CI's Redis leg)")
    import redis

    server = redis.Redis.from_url(settings.REDIS_URL)
    body = {"user_id": "alice", "prompt": "a cat", "width": 64, "height": 64, "num_frames": 9}
    with django_capture_on_commit_callbacks(execute=True):
        api.post("/api/v1/generate", body, format="json")
    before = server.info("stats")["total_connections_received"]

    for _ in range(10):
        with django_capture_on_commit_callbacks(execute=True):
            assert api.post("/api/v1/generate", body, format="json").status_code == 202

    # Other clients of the same server may connect meanwhile; not one per submit.
    assert server.info("stats")["total_connections_received"] - before < 5


def test_the_submit_counts_write_commits_without_waiting_for_the_disk(transactional_db, submits_counted_in_memory):
    from jobs.metrics import series as metrics

    if connection.vendor != "postgresql":
        pytest.skip("synchronous_commit is PostgreSQL's")

    def setting():
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            return cursor.fetchone()[0]

    submit_counts = submits_counted_in_memory()  # this test writes, not the thread
    metrics.record_submitted("tiny-random")
    with CaptureQueriesContext(connection) as queries:
        submit_counts.write()

    # One round trip: its own implicit transaction, which alone skips the flush.
    [count] = [q["sql"] for q in queries.captured_queries]
    assert count.startswith("SET LOCAL synchronous_commit TO OFF; INSERT INTO videogen_metric_series")
    assert setting() == "on"
    with connection.cursor() as cursor:
        cursor.execute("SELECT value FROM videogen_metric_series WHERE name = 'videogen_jobs_submitted_total'")
        assert cursor.fetchone() == (1.0,)


class TestTheKeyCache:
    """A checked key is trusted for VIDEOGEN_API_KEY_CACHE_SECONDS; revoked here, refused here at once."""

    @pytest.fixture(autouse=True)
    def empty_cache(self):
        from jobs.models import keys as models

        models._checked_keys.clear()
        yield
        models._checked_keys.clear()

    def key_reads(self, presented: str, times: int) -> int:
        from jobs.models import ApiKey

        with CaptureQueriesContext(connection) as queries:
            for _ in range(times):
                assert ApiKey.objects.verify(presented) is not None
        return sum('"videogen_api_keys"' in query["sql"] for query in queries.captured_queries)

    def test_a_checked_key_is_not_read_again_within_the_cache_time(self, db, settings):
        from jobs.models import ApiKey

        settings.VIDEOGEN_API_KEY_CACHE_SECONDS = 60
        _, presented = ApiKey.issue(user_id="alice")

        assert self.key_reads(presented, 5) == 1

    def test_with_no_cache_time_every_request_reads_the_key(self, db, settings):
        from jobs.models import ApiKey

        settings.VIDEOGEN_API_KEY_CACHE_SECONDS = 0
        _, presented = ApiKey.issue(user_id="alice")

        assert self.key_reads(presented, 3) == 3

    def test_a_revocation_in_this_process_holds_at_once(self, db, settings):
        from jobs.models import ApiKey

        settings.VIDEOGEN_API_KEY_CACHE_SECONDS = 60
        key, presented = ApiKey.issue(user_id="alice")
        assert ApiKey.objects.verify(presented) == key

        ApiKey.objects.get(pk=key.pk).revoke()

        assert ApiKey.objects.verify(presented) is None

    def test_wrong_keys_are_not_remembered(self, db, settings):
        from jobs.models import keys as models
        from jobs.models import ApiKey

        settings.VIDEOGEN_API_KEY_CACHE_SECONDS = 60
        key, presented = ApiKey.issue(user_id="alice")
        for guess in (presented[:-1] + "x", key.prefix + ".nothing", "vg_0000.x"):
            assert ApiKey.objects.verify(guess) is None

        assert models._checked_keys == {}
