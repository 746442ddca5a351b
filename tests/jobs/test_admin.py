"""The jobs admin, through Django's test client, as a staff operator."""

import datetime

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django_q.models import OrmQ

from jobs import admin as jobs_admin
from jobs.models import ErrorCode, Status, VideoGenerationJob
from tests.support.admin import CHANGELIST



def listed(response) -> list:
    assert response.status_code == 200, response.content[:500]
    return [job.pk for job in response.context["cl"].result_list]


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def change_url(job: VideoGenerationJob) -> str:
    return reverse("admin:jobs_videogenerationjob_change", args=[job.pk])


def at(day: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(day).replace(tzinfo=datetime.timezone.utc)


def run_action(staff_client, action: str, jobs: list[VideoGenerationJob]):
    return staff_client.post(
        CHANGELIST,
        {"action": action, "_selected_action": [str(job.pk) for job in jobs], "index": 0},
        follow=True,
    )


# --- The list


def test_it_lists_every_users_jobs_newest_first(staff_client, make_job):
    now = timezone.now()
    old = make_job(user_id="alice", submitted_at=now - datetime.timedelta(hours=2))
    new = make_job(user_id="bob", submitted_at=now)
    middle = make_job(user_id="carol", submitted_at=now - datetime.timedelta(hours=1))

    assert listed(staff_client.get(CHANGELIST)) == [new.pk, middle.pk, old.pk]


def test_each_row_shows_user_status_progress_model_prompt_run_time_and_poster(staff_client, make_completed_job):
    started = timezone.now() - datetime.timedelta(minutes=5)
    job = make_completed_job(user_id="dora", prompt="a red kite over green hills " * 5, started_at=started)
    VideoGenerationJob.objects.filter(pk=job.pk).update(completed_at=started + datetime.timedelta(seconds=12))

    html = staff_client.get(CHANGELIST).content.decode()

    assert "dora" in html
    assert "job-status-completed" in html and "#198754" in html
    assert '<progress max="100" value="100"' in html
    assert "tiny-random" in html
    assert "a red kite over green hills a red kite over green hills a r…" in html
    assert "12.0 s" in html
    assert f'<img src="{reverse("poster", args=[job.pk])}"' in html


def test_a_running_jobs_run_time_counts_from_its_start(staff_client, make_job):
    make_job(status=Status.RUNNING, progress=40, started_at=timezone.now() - datetime.timedelta(seconds=95))

    html = staff_client.get(CHANGELIST).content.decode()

    assert "1 min 35 s so far" in html
    assert '<progress max="100" value="40"' in html


def test_each_status_has_its_own_colour(staff_client, make_job):
    for status in Status:
        make_job(status=status)

    html = staff_client.get(CHANGELIST).content.decode()

    for status, colour in jobs_admin.STATUS_COLOURS.items():
        assert f'job-status-{status}" style="color: #fff; background: {colour};' in html


def test_it_filters_by_status(staff_client, make_job):
    failed = make_job(status=Status.FAILED)
    make_job(status=Status.COMPLETED)

    assert listed(staff_client.get(CHANGELIST + "?status__exact=failed")) == [failed.pk]


def test_it_filters_by_model(staff_client, make_job):
    make_job(model_name="tiny-random")
    big = make_job(model_name="cogvideox-2b")

    response = staff_client.get(CHANGELIST + "?model_name=cogvideox-2b")

    assert listed(response) == [big.pk]
    assert "?model_name=tiny-random" in response.content.decode()


def test_it_filters_by_failure_class(staff_client, make_job):
    out_of_memory = make_job(status=Status.FAILED, error_code=ErrorCode.OUT_OF_MEMORY)
    make_job(status=Status.FAILED, error_code=ErrorCode.TIMEOUT)

    assert listed(staff_client.get(CHANGELIST + "?error_code__exact=out_of_memory")) == [out_of_memory.pk]


def test_jobs_the_broker_refused_have_their_own_failure_class(staff_client, make_job):
    refused = make_job()
    refused.fail(ErrorCode.ENQUEUE_FAILED, "The job could not be queued: broker down", from_={Status.PENDING})

    response = staff_client.get(CHANGELIST + "?error_code__exact=enqueue_failed")

    assert listed(response) == [refused.pk]
    assert "?error_code__exact=enqueue_failed" in staff_client.get(CHANGELIST).content.decode()


def test_it_filters_by_an_exact_user_id(staff_client, make_job):
    alice = make_job(user_id="alice")
    make_job(user_id="alice2")
    make_job(user_id="bob")

    assert listed(staff_client.get(CHANGELIST + "?user_id=alice")) == [alice.pk]


def test_the_user_id_box_keeps_the_other_filters(staff_client, make_job):
    make_job()

    html = staff_client.get(CHANGELIST + "?status__exact=failed").content.decode()

    assert '<input type="hidden" name="status__exact" value="failed">' in html
    assert 'name="user_id"' in html


def test_it_filters_by_submission_date(staff_client, make_job):
    today = make_job(submitted_at=timezone.now() - datetime.timedelta(hours=1))
    this_week = make_job(submitted_at=timezone.now() - datetime.timedelta(days=3))
    make_job(submitted_at=timezone.now() - datetime.timedelta(days=60))

    changelist = staff_client.get(CHANGELIST).context["cl"]
    [date_filter] = [spec for spec in changelist.filter_specs if spec.title == "submitted at"]
    links = {choice["display"]: choice["query_string"] for choice in date_filter.choices(changelist)}

    assert listed(staff_client.get(CHANGELIST + links["Past 7 days"])) == [today.pk, this_week.pk]
    assert listed(staff_client.get(CHANGELIST + links["Today"])) == [today.pk]


def test_a_drilldown_link_from_before_the_date_filter_still_lists_its_jobs(staff_client, make_job):
    march_2 = make_job(submitted_at=at("2025-03-02T10:00"))
    make_job(submitted_at=at("2025-04-01T10:00"))

    assert listed(staff_client.get(CHANGELIST + "?submitted_at__month=3&submitted_at__year=2025")) == [march_2.pk]


def test_it_searches_by_exact_user_id(staff_client, make_job):
    alice = make_job(user_id="alice", prompt="a boat")
    make_job(user_id="alice2", prompt="a boat")

    assert listed(staff_client.get(CHANGELIST + "?q=alice")) == [alice.pk]


def test_it_searches_prompts(staff_client, make_job):
    kite = make_job(prompt="A red KITE over hills")
    make_job(prompt="a boat")

    assert listed(staff_client.get(CHANGELIST + "?q=kite")) == [kite.pk]


# --- Fast on a large table


def list_queries(staff_client, path: str = CHANGELIST) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        response = staff_client.get(path)
    assert response.status_code == 200
    return [query["sql"] for query in queries.captured_queries]


def make_mixed_jobs(make_job, make_completed_job, count: int) -> None:
    for index in range(count):
        if index % 3 == 0:
            make_completed_job(started_at=timezone.now())
        elif index % 3 == 1:
            make_job(status=Status.RUNNING, started_at=timezone.now(), progress=index)
        else:
            make_job(status=Status.FAILED, error_code=ErrorCode.ENCODE, error_message="broken")


def test_a_page_of_forty_jobs_costs_the_same_few_queries_as_a_page_of_three(
    staff_client, make_job, make_completed_job
):
    make_mixed_jobs(make_job, make_completed_job, 3)
    few = list_queries(staff_client)
    make_mixed_jobs(make_job, make_completed_job, 37)
    many = list_queries(staff_client)

    # Session, user, the user's and the groups' permissions, the count and
    # the page; on PostgreSQL, the table's size estimate before a small table
    # is counted. The date filter's links cost no query.
    expected = 7 if connection.vendor == "postgresql" else 6
    assert len(many) == len(few) == expected, "\n".join(many)


def test_the_count_stops_at_the_cap(staff_client, make_job, monkeypatch):
    monkeypatch.setattr(jobs_admin, "COUNT_CAP", 3)
    for _ in range(5):
        make_job(status=Status.FAILED)

    response = staff_client.get(CHANGELIST + "?status__exact=failed")
    html = response.content.decode()

    assert "more than 3" in html
    assert len(listed(response)) == 5


def test_the_page_never_counts_the_whole_table(staff_client, make_job):
    make_job()

    counts = [sql for sql in list_queries(staff_client) if "COUNT(" in sql.upper()]

    assert counts and all("LIMIT" in sql for sql in counts), counts


@pytest.mark.skipif(connection.vendor != "postgresql", reason="pg_class statistics exist only on PostgreSQL")
def test_on_postgresql_a_large_table_is_counted_from_its_statistics(staff_client, make_job, monkeypatch):
    monkeypatch.setattr(jobs_admin, "COUNT_CAP", 3)
    for _ in range(5):
        make_job()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE video_generation_jobs")

    queries = list_queries(staff_client)
    html = staff_client.get(CHANGELIST).content.decode()

    assert not any("COUNT(" in sql.upper() for sql in queries), queries
    assert "about 5" in html


@pytest.mark.parametrize(
    "query, index",
    [
        ("", "job_submitted_idx"),
        ("?status__exact=failed", "job_status_submitted_idx"),
        ("?model_name=cogvideox-2b", "job_model_submitted_idx"),
        ("?error_code__exact=timeout", "job_error_submitted_idx"),
        ("?user_id=alice", "job_user_submitted_idx"),
        ("?submitted_at__gte=2025-03-01+00:00:00%2B00:00&submitted_at__lt=2025-04-01+00:00:00%2B00:00",
         "job_submitted_idx"),
    ],
)
def test_each_filter_is_served_by_an_index(staff_client, make_job, query, index):
    make_job(status=Status.FAILED, error_code=ErrorCode.TIMEOUT, submitted_at=at("2025-03-02T10:00"))
    [page_query] = [sql for sql in list_queries(staff_client, CHANGELIST + query) if '"prompt",' in sql]

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # A handful of rows is cheapest to scan: ask whether an index can
            # serve the query, as it will once the table is large.
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("EXPLAIN " + page_query)
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + page_query)
        plan = " ".join(str(part) for row in cursor.fetchall() for part in row)

    assert index in plan, plan


# --- The job page


def test_the_job_page_shows_parameters_and_timestamps_read_only(staff_client, make_job):
    job = make_job(seed=1234, fps=12, started_at=timezone.now())

    response = staff_client.get(change_url(job))
    html = response.content.decode()

    assert response.status_code == 200
    for text in ["1234", "Fps", "Num inference steps", "Submitted at", "Started at", job.prompt]:
        assert text in html
    assert 'name="prompt"' not in html and 'name="seed"' not in html
    assert 'name="_save"' not in html


def test_the_job_page_shows_the_error_text_escaped(staff_client, make_job):
    job = make_job(status=Status.FAILED, error_code=ErrorCode.ENCODE, error_message="Generation failed: <b>x</b>")

    html = staff_client.get(change_url(job)).content.decode()

    assert "Generation failed: &lt;b&gt;x&lt;/b&gt;" in html


def test_the_job_page_shows_the_poster_and_a_player_for_the_video(staff_client, make_completed_job):
    job = make_completed_job()

    html = staff_client.get(change_url(job)).content.decode()

    assert f'<video id="job-video" controls preload="metadata" src="{reverse("download", args=[job.pk])}"' in html
    assert f'<img src="{reverse("poster", args=[job.pk])}" alt="poster of job {job.pk}"' in html


def test_the_players_video_is_served_in_ranges_so_it_can_seek(staff_client, make_completed_job, media_root):
    job = make_completed_job()
    data = (media_root / job.video.name).read_bytes()

    response = staff_client.get(reverse("download", args=[job.pk]), HTTP_RANGE="bytes=100-")

    assert response.status_code == 206
    assert b"".join(response.streaming_content) == data[100:]


def test_an_unfinished_job_has_no_player(staff_client, make_job):
    job = make_job(status=Status.RUNNING)

    assert "<video" not in staff_client.get(change_url(job)).content.decode()


def readonly_values(html: str) -> dict[str, str]:
    """The job page's read-only fields, label to the text shown."""
    import html as html_module
    import re

    return {
        label.rstrip(":"): html_module.unescape(re.sub(r"<[^>]+>", "", value)).strip()
        for label, value in re.findall(r'<label>([^<]*)</label>\s*<div class="readonly">(.*?)</div>', html, re.S)
    }


def test_the_job_page_shows_durations_and_sizes_as_people_read_them(staff_client, make_completed_job, settings):
    settings.VIDEOGEN_RETENTION_DAYS = 7
    job = make_completed_job()
    started = timezone.now() - datetime.timedelta(seconds=95)
    VideoGenerationJob.objects.filter(pk=job.pk).update(
        video_duration_seconds=2 / 3, file_size_bytes=2_111_000,
        started_at=started, completed_at=started + datetime.timedelta(seconds=90),
    )

    shown = readonly_values(staff_client.get(change_url(job)).content.decode())

    assert shown["Video duration"] == "667 ms"
    assert shown["File size"] == "2.0\xa0MB"
    assert shown["Run time"] == "1 min 30 s"
    assert shown["Expires at"] not in ("-", "None")


def test_every_empty_value_on_the_job_page_reads_as_one_dash(staff_client, make_job):
    job = make_job()

    shown = readonly_values(staff_client.get(change_url(job)).content.decode())

    assert "None" not in shown.values(), shown
    for label in ["Negative prompt", "Started at", "Completed at", "Run time", "Expires at", "Expired at", "Webhook url",
                  "Error code", "Error", "File size", "Video duration", "Worker", "Heartbeat at", "Run info"]:
        assert shown[label] == "-", (label, shown[label])


@pytest.mark.parametrize(
    "seconds, text",
    [(None, "-"), (0.004, "4 ms"), (2 / 3, "667 ms"), (1.25, "1.2 s"), (59.94, "59.9 s"), (90, "1 min 30 s"),
     (3599, "59 min 59 s"), (7260, "2 h 01 min"), (datetime.timedelta(seconds=12), "12.0 s"), (-1, "0 ms")],
)
def test_durations_read_in_the_unit_that_fits(seconds, text):
    assert jobs_admin.shown_duration(seconds) == text


@pytest.mark.parametrize(
    "count, text", [(None, "-"), (0, "0\xa0bytes"), (512, "512\xa0bytes"), (2111, "2.1\xa0KB"), (5 * 1024**2, "5.0\xa0MB")]
)
def test_sizes_read_in_the_unit_that_fits(count, text):
    assert jobs_admin.shown_size(count) == text


# --- Actions


def test_rerunning_selected_jobs_requeues_the_failed_ones_and_says_why_others_were_skipped(
    staff_client, make_job, django_capture_on_commit_callbacks
):
    failed = [make_job(status=Status.FAILED, error_code=ErrorCode.TIMEOUT) for _ in range(2)]
    others = [make_job(status=Status.COMPLETED), make_job(status=Status.RUNNING)]

    with django_capture_on_commit_callbacks(execute=True):
        response = run_action(staff_client, "rerun_selected", failed + others)

    assert messages_of(response) == [
        "Re-ran 2 jobs.",
        "Skipped 2 jobs (only failed jobs can be re-run): 1 completed, 1 running.",
    ]
    for job in failed:
        job.refresh_from_db()
        assert (job.status, job.attempts) == (Status.PENDING, 2)
        assert {name: getattr(job, name) for name in job.REQUEUE_RESETS} == job.REQUEUE_RESETS
    assert sorted(task.task["args"][0] for task in OrmQ.objects.all()) == sorted(str(job.pk) for job in failed)
    assert [VideoGenerationJob.objects.get(pk=job.pk).status for job in others] == [Status.COMPLETED, Status.RUNNING]


def test_cancelling_selected_jobs_stops_pending_and_running_ones_and_says_why_others_were_skipped(
    staff_client, make_job
):
    active = [make_job(status=Status.PENDING), make_job(status=Status.RUNNING)]
    failed = make_job(status=Status.FAILED)

    response = run_action(staff_client, "cancel_selected", active + [failed])

    assert messages_of(response) == [
        "Cancelled 2 jobs.",
        "Skipped 1 job (only pending or running jobs can be cancelled): 1 failed.",
    ]
    assert {VideoGenerationJob.objects.get(pk=job.pk).status for job in active} == {Status.CANCELLED}
    failed.refresh_from_db()
    assert failed.status == Status.FAILED


def test_an_action_on_more_jobs_than_its_limit_is_refused(staff_client, make_job, monkeypatch):
    monkeypatch.setattr(jobs_admin, "ACTION_LIMIT", 2)
    jobs = [make_job(status=Status.FAILED) for _ in range(3)]

    response = run_action(staff_client, "rerun_selected", jobs)

    assert "more than 2 jobs at once is refused" in messages_of(response)[0]
    assert set(VideoGenerationJob.objects.values_list("status", flat=True)) == {Status.FAILED}


# --- Who may use it


def test_a_logged_in_user_who_is_not_staff_is_sent_to_the_login_page(client, make_job):
    client.force_login(User.objects.create_user("mallory", password="secret"))

    response = client.get(CHANGELIST)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_an_anonymous_visitor_is_sent_to_the_login_page(client, make_job):
    job = make_job()

    response = client.get(change_url(job))

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_jobs_cannot_be_added_or_deleted_here(staff_client, make_job):
    job = make_job()

    assert staff_client.get(reverse("admin:jobs_videogenerationjob_add")).status_code == 403
    assert staff_client.get(reverse("admin:jobs_videogenerationjob_delete", args=[job.pk])).status_code == 403


# --- Image inputs


def test_an_image_jobs_inputs_show_as_thumbnails_and_the_list_filters_by_mode(staff_client, make_job):
    image_job = make_job(mode="first-last-frame", image="inputs/a.png", last_image="inputs/b.png",
                         model_name="tiny-random-wan-flf2v")
    text_job = make_job()

    page = staff_client.get(change_url(image_job)).content.decode()
    row = staff_client.get(CHANGELIST).content.decode()

    for field in ("image", "last_image"):
        assert f'src="/api/v1/{field}/{image_job.pk}"' in page
        assert f'alt="{field} of job {image_job.pk}"' in page
        assert f'src="/api/v1/{field}/{image_job.pk}"' in row
    assert listed(staff_client.get(CHANGELIST + "?mode__exact=first-last-frame")) == [image_job.pk]
    assert listed(staff_client.get(CHANGELIST + "?mode__exact=text-to-video")) == [text_job.pk]
