import datetime
import html
import re

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from jobs.models import Status, VideoGenerationJob, WebhookAttempt, WebhookEvent

CHANGELIST = reverse("admin:jobs_videogenerationjob_changelist")


@pytest.fixture
def admin_user_client(client, db):
    client.force_login(User.objects.create_superuser("root", password="secret"))
    return client


def test_the_admins_delete_removes_the_files_and_the_row(admin_user_client, make_completed_job, media_root):
    job = make_completed_job()
    video = media_root / job.video.name

    response = admin_user_client.post(reverse("admin:jobs_videogenerationjob_delete", args=[job.pk]), {"post": "yes"})

    assert response.status_code == 302
    assert not VideoGenerationJob.objects.filter(pk=job.pk).exists()
    assert not video.exists()


def test_the_admins_bulk_delete_cancels_active_jobs_and_removes_files(admin_user_client, make_completed_job, make_job,
                                                                       media_root):
    done = make_completed_job()
    running = make_job(status=Status.RUNNING)

    response = admin_user_client.post(
        CHANGELIST,
        {"action": "delete_selected", "_selected_action": [str(done.pk), str(running.pk)], "post": "yes"},
    )

    assert response.status_code == 302
    assert not VideoGenerationJob.objects.filter(pk__in=[done.pk, running.pk]).exists()
    assert not (media_root / done.video.name).exists()


# "msg_22...": the admin reads "_22" in a URL as an escaped '"'; about one
# event id in thirty starts with such a pair.
@pytest.mark.parametrize("event_id", [None, "msg_22" + "0" * 30])
def test_the_job_page_shows_its_deliveries_and_links_to_each(admin_user_client, make_job, event_id):
    job = make_job(webhook_url="https://hooks.example.com/x", webhook_events=["cancelled"])
    job.transition(Status.CANCELLED, from_={Status.PENDING}, completed_at=timezone.now())
    event = WebhookEvent.objects.get(job=job)
    if event_id:
        WebhookEvent.objects.filter(pk=event.pk).update(id=event_id)
        event = WebhookEvent.objects.get(pk=event_id)
    WebhookAttempt.objects.create(event=event, status_code=503, latency_ms=12, response_body="busy")

    page = admin_user_client.get(reverse("admin:jobs_videogenerationjob_change", args=[job.pk])).content.decode()
    assert event.pk in page and "job.cancelled" in page and "https://hooks.example.com/x" in page

    [link] = re.findall(r'href="([^"]*/webhookevent/[^"/]+/change/)"', page)
    event_page = admin_user_client.get(html.unescape(link))
    assert event_page.status_code == 200
    assert "503" in event_page.content.decode() and "busy" in event_page.content.decode()
    assert "12 ms" in event_page.content.decode()  # the admin's one way of showing durations


def test_the_send_again_action_puts_an_event_back_in_the_queue(admin_user_client, make_job):
    job = make_job(webhook_url="https://hooks.example.com/x", webhook_events=["cancelled"])
    job.transition(Status.CANCELLED, from_={Status.PENDING}, completed_at=timezone.now())
    WebhookEvent.objects.filter(job=job).update(state="failed", last_error="the receiver answered 410")
    event = WebhookEvent.objects.get(job=job)

    response = admin_user_client.post(
        reverse("admin:jobs_webhookevent_changelist"),
        {"action": "send_again", "_selected_action": [event.pk]},
        follow=True,
    )

    assert "Queued 1 event to be sent again." in [str(m) for m in response.context["messages"]]
    event.refresh_from_db()
    assert event.state == "pending" and event.last_error == ""
    assert event.retry_until > timezone.now() + datetime.timedelta(hours=23)


def test_the_list_filters_by_expiry(admin_user_client, make_job):
    expired = make_job(status=Status.COMPLETED, completed_at=timezone.now(), expired_at=timezone.now())
    kept = make_job(status=Status.COMPLETED, completed_at=timezone.now())

    only_expired = admin_user_client.get(CHANGELIST + "?expired=yes")
    only_kept = admin_user_client.get(CHANGELIST + "?expired=no")

    assert [job.pk for job in only_expired.context["cl"].result_list] == [expired.pk]
    assert [job.pk for job in only_kept.context["cl"].result_list] == [kept.pk]
