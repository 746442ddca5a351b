"""
Webhook submit validation, event recording, signing and delivery against a
real HTTP receiver on 127.0.0.1 (tests/support/receiver.py), which verifies every
signature with the standardwebhooks package. Delivery runs in this process
here; tests/test_webhook_cluster.py runs it in a real webhook cluster.
"""

import base64
import hashlib
import hmac
import json
import socket
import time
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from django.utils import timezone

from django.conf import settings

from jobs.webhooks import delivery, sending
from jobs.models import Status, WebhookEvent
from jobs.services.lifecycle import job_cancel
from tests.support.receiver import SECRET, event_types, running_receiver, self_signed, tls_context

SUBMIT = {"user_id": "alice", "prompt": "a cat", "width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 2}


@pytest.fixture(autouse=True)
def webhook_settings(settings):
    settings.VIDEOGEN_WEBHOOK_SECRET = SECRET
    settings.VIDEOGEN_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.VIDEOGEN_WEBHOOK_TIMEOUT = 2.0
    settings.VIDEOGEN_WEBHOOK_RETRY_BASE = 0.05
    return settings


@pytest.fixture
def receiver():
    with running_receiver(slow_seconds=5) as receiver:
        yield receiver


def submit(api, **fields):
    return api.post("/api/v1/generate", {**SUBMIT, **fields}, format="json")


def event_for(make_job, receiver, path: str, status=Status.COMPLETED) -> WebhookEvent:
    job = make_job(webhook_url=receiver.url + path, webhook_events=[status.value])
    job.transition(Status.RUNNING, from_={Status.PENDING}, started_at=timezone.now())
    if status != Status.RUNNING:
        job.transition(status, from_={Status.RUNNING}, completed_at=timezone.now())
    return WebhookEvent.objects.filter(job=job).order_by("-created_at").first()


# --- Submit ----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_webhook_is_stored_and_shown_with_the_default_events(api, receiver):
    response = submit(api, webhook_url=receiver.url + "/ok")
    assert response.status_code == 202, response.json()
    body = api.get(f"/api/v1/job/{response.json()['job_id']}?user_id=alice").json()
    assert body["webhook_url"] == receiver.url + "/ok"
    assert body["webhook_events"] == ["completed", "failed", "cancelled"]


@pytest.mark.django_db
def test_a_job_without_a_webhook_shows_none(api):
    body = submit(api).json()
    assert body["webhook_url"] is None and body["webhook_events"] == []


@pytest.mark.django_db
def test_chosen_events_are_stored_once_each(api, receiver):
    body = submit(api, webhook_url=receiver.url + "/ok", webhook_events=["running", "completed", "running"]).json()
    assert body["webhook_events"] == ["running", "completed"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hook",  # http to a host not allowed
        "https://127.0.0.2/hook",  # loopback, not allowed
        "https://10.1.2.3/hook",  # private
        "https://192.168.0.1/hook",
        "https://169.254.169.254/latest/meta-data",  # link-local: cloud metadata
        "https://224.0.0.1/hook",  # multicast
        "https://240.0.0.1/hook",  # reserved
        "https://[::1]/hook",
        "https://[::ffff:10.0.0.1]/hook",  # IPv4-mapped private
        "https://0.0.0.0/hook",
        "https://localhost/hook",  # resolves to loopback
        "ftp://example.com/hook",
        "https://user:secret@example.com/hook",
        "not a url",
        "https://" + "a" * 1990 + ".com/",  # over 2,000 characters
    ],
)
def test_a_refused_webhook_url_is_a_400_naming_the_field(api, url):
    response = submit(api, webhook_url=url)
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["webhook_url"]


@pytest.mark.django_db
def test_unknown_events_and_events_without_a_url_are_refused(api, receiver):
    response = submit(api, webhook_url=receiver.url + "/ok", webhook_events=["done"])
    assert response.status_code == 400 and "webhook_events" in response.json()["errors"]
    response = submit(api, webhook_events=["completed"])
    assert response.status_code == 400 and "webhook_events" in response.json()["errors"]


@pytest.mark.django_db
def test_a_bad_item_of_a_list_field_is_a_message_naming_the_item_in_the_documented_shape(api, receiver):
    # DRF reports a list's items as {"0": [...]}; the schema says every field's errors are a list of strings.
    response = submit(api, webhook_url=receiver.url + "/ok", webhook_events=["completed", "done"])

    assert response.status_code == 400
    assert response.json()["errors"] == {"webhook_events": ['item 1: "done" is not a valid choice.']}
    assert 'webhook_events: item 1: "done" is not a valid choice.' in response.json()["detail"]


@pytest.mark.django_db
def test_without_a_secret_the_server_refuses_webhooks(api, receiver, settings):
    settings.VIDEOGEN_WEBHOOK_SECRET = ""
    response = submit(api, webhook_url=receiver.url + "/ok")
    assert response.status_code == 400
    assert "VIDEOGEN_WEBHOOK_SECRET" in response.json()["errors"]["webhook_url"][0]


@pytest.mark.django_db
def test_the_webhook_is_part_of_the_idempotency_fingerprint(api, receiver):
    first = api.post("/api/v1/generate", {**SUBMIT, "webhook_url": receiver.url + "/ok"}, format="json",
                     HTTP_IDEMPOTENCY_KEY="k1")
    assert first.status_code == 202
    again = api.post("/api/v1/generate", {**SUBMIT, "webhook_url": receiver.url + "/ok"}, format="json",
                     HTTP_IDEMPOTENCY_KEY="k1")
    assert again.status_code == 200 and again.json()["job_id"] == first.json()["job_id"]
    other_url = api.post("/api/v1/generate", {**SUBMIT, "webhook_url": receiver.url + "/other"}, format="json",
                         HTTP_IDEMPOTENCY_KEY="k1")
    assert other_url.status_code == 422
    other_events = api.post(
        "/api/v1/generate", {**SUBMIT, "webhook_url": receiver.url + "/ok", "webhook_events": ["completed"]},
        format="json", HTTP_IDEMPOTENCY_KEY="k1",
    )
    assert other_events.status_code == 422


# --- Recording ---------------------------------------------------------------------


@pytest.mark.django_db
def test_only_the_chosen_events_are_recorded(make_job, receiver):
    job = make_job(webhook_url=receiver.url + "/ok", webhook_events=["completed"])
    job.transition(Status.RUNNING, from_={Status.PENDING})
    assert not WebhookEvent.objects.filter(job=job).exists()
    job.transition(Status.COMPLETED, from_={Status.RUNNING}, completed_at=timezone.now())
    event = WebhookEvent.objects.get(job=job)
    payload = json.loads(event.payload)
    assert payload["type"] == "job.completed"
    assert payload["data"]["job_id"] == str(job.id) and payload["data"]["status"] == "completed"


@pytest.mark.django_db
def test_a_transition_that_does_not_happen_records_nothing(make_job, receiver):
    job = make_job(webhook_url=receiver.url + "/ok", webhook_events=["cancelled"], status=Status.COMPLETED)
    assert not job_cancel(job)
    assert not WebhookEvent.objects.exists()


@pytest.mark.django_db
def test_a_job_without_a_webhook_records_no_events(make_job):
    job = make_job()
    job_cancel(job)
    assert not WebhookEvent.objects.exists()


# --- Signature -----------------------------------------------------------------------


def test_the_signature_matches_the_spec_by_hand(settings):
    # HMAC-SHA256 over "id.timestamp.body" with the base64-decoded key, as
    # the Standard Webhooks spec defines it, independent of the package.
    at = datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt_timezone.utc)
    headers = sending.signature_headers("msg_p5jXN8AQM9LWM0D4loKWxJek", '{"test": 2432232314}', at)
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    expected = hmac.new(key, f"msg_p5jXN8AQM9LWM0D4loKWxJek.{int(at.timestamp())}.{{\"test\": 2432232314}}".encode(),
                        hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(expected).decode()
    assert headers["webhook-timestamp"] == str(int(at.timestamp()))


def test_the_signature_matches_the_spec_test_vector(settings):
    # The test vector of the standard-webhooks repository's libraries.
    settings.VIDEOGEN_WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    at = datetime.fromtimestamp(1614265330, tz=dt_timezone.utc)
    headers = sending.signature_headers("msg_p5jXN8AQM9LWM0D4loKWxJek", '{"test": 2432232314}', at)
    assert headers["webhook-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


# --- Delivery against the receiver ----------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_delivery_is_signed_and_recorded(make_job, receiver):
    event = event_for(make_job, receiver, "/ok")
    started = time.monotonic()
    assert delivery.deliver(event.id) == WebhookEvent.State.DELIVERED
    elapsed_ms = (time.monotonic() - started) * 1000
    received = receiver.wait_for(1)
    assert not receiver.rejected
    assert event_types(received) == ["job.completed"]
    assert received[0].headers["webhook-id"] == event.id
    assert received[0].body["data"]["status"] == "completed"
    assert received[0].raw.decode() == event.payload  # the recorded body is the one signed and sent
    attempt = event.attempt_log.get()
    # The attempt's own time: within the delivery that made it.
    assert attempt.status_code == 200 and attempt.latency_ms <= elapsed_ms
    assert len(attempt.response_body) == sending.BODY_KEPT  # the first 1 KB of a longer body


@pytest.mark.django_db(transaction=True)
def test_500_twice_then_200_is_retried_with_the_same_id_until_delivered(make_job, receiver):
    event = event_for(make_job, receiver, "/flaky")
    assert delivery.deliver(event.id) == WebhookEvent.State.DELIVERED
    assert [a.status_code for a in event.attempt_log.all()] == [500, 500, 200]
    assert receiver.attempts[("/flaky", event.id)] == 3
    assert receiver.delivered("/flaky")[0].headers["webhook-id"] == event.id


@pytest.mark.django_db(transaction=True)
def test_a_410_is_not_retried(make_job, receiver):
    event = event_for(make_job, receiver, "/gone")
    assert delivery.deliver(event.id) == WebhookEvent.State.FAILED
    attempt = event.attempt_log.get()
    assert attempt.status_code == 410 and attempt.response_body == "this endpoint is gone"


@pytest.mark.django_db(transaction=True)
def test_a_redirect_is_not_followed(make_job, receiver):
    event = event_for(make_job, receiver, "/redirect")
    assert delivery.deliver(event.id) == WebhookEvent.State.FAILED
    assert [a.status_code for a in event.attempt_log.all()] == [302]
    assert receiver.delivered("/ok") == []


@pytest.mark.django_db(transaction=True)
def test_a_slow_receiver_times_out_and_is_retried(make_job, receiver, settings):
    settings.VIDEOGEN_WEBHOOK_TIMEOUT = 1.0
    settings.VIDEOGEN_WEBHOOK_RETRY_BASE = 3600  # the retry is left to the sweep
    event = event_for(make_job, receiver, "/slow")
    assert delivery.deliver(event.id) == WebhookEvent.State.PENDING
    attempt = event.attempt_log.get()
    assert attempt.status_code is None and "timed out" in attempt.error
    event.refresh_from_db()
    # Backoff with jitter: between half and all of the base.
    assert timedelta(seconds=1799) <= event.next_attempt_at - attempt.attempted_at <= timedelta(seconds=3601)


@pytest.mark.django_db(transaction=True)
def test_a_closed_connection_is_retried(make_job, receiver, settings):
    settings.VIDEOGEN_WEBHOOK_RETRY_BASE = 3600
    event = event_for(make_job, receiver, "/close")
    assert delivery.deliver(event.id) == WebhookEvent.State.PENDING
    attempt = event.attempt_log.get()
    assert attempt.status_code is None and attempt.error


@pytest.mark.django_db(transaction=True)
def test_retries_stop_after_the_retry_window(make_job, receiver):
    event = event_for(make_job, receiver, "/close")
    WebhookEvent.objects.filter(pk=event.pk).update(retry_until=timezone.now() + timedelta(seconds=0.5))
    assert delivery.deliver(event.id) == WebhookEvent.State.FAILED
    event.refresh_from_db()
    assert event.last_error.startswith("gave up after")


@pytest.mark.django_db(transaction=True)
def test_a_deleted_job_stops_its_retries(make_job, receiver, settings):
    settings.VIDEOGEN_WEBHOOK_RETRY_BASE = 3600
    event = event_for(make_job, receiver, "/close")
    delivery.deliver(event.id)
    event.job.delete()
    WebhookEvent.objects.filter(pk=event.pk).update(next_attempt_at=timezone.now())  # no-op: gone
    assert delivery.send_due() == 0
    assert delivery.deliver(event.id) == "skipped"


@pytest.mark.django_db(transaction=True)
def test_the_sweep_queues_due_events_only(make_job, receiver):
    due = event_for(make_job, receiver, "/ok")
    later = event_for(make_job, receiver, "/ok")
    WebhookEvent.objects.filter(pk=later.pk).update(next_attempt_at=timezone.now() + timedelta(minutes=5))
    from django_q.brokers import get_broker

    broker = get_broker(list_key=settings.VIDEOGEN_WEBHOOK_QUEUE)
    before = broker.queue_size()
    assert delivery.send_due() == 1
    assert broker.queue_size() == before + 1
    assert due.pk != later.pk


@pytest.mark.django_db(transaction=True)
def test_the_address_connected_to_is_checked_again(make_job, receiver, settings, monkeypatch):
    # Allowed at submit, then the host name resolves to loopback (DNS
    # rebinding): the connection is refused, not made.
    event = event_for(make_job, receiver, "/ok")
    port = receiver.url.rsplit(":", 1)[1]
    WebhookEvent.objects.filter(pk=event.pk).update(url=f"https://rebind.example:{port}/ok")
    real = socket.getaddrinfo
    monkeypatch.setattr(
        socket, "getaddrinfo",
        lambda host, *a, **k: real("127.0.0.1", *a, **k) if host == "rebind.example" else real(host, *a, **k),
    )
    assert delivery.deliver(event.id) == WebhookEvent.State.FAILED
    attempt = event.attempt_log.get()
    assert "refused" in attempt.error and "127.0.0.1" in attempt.error
    assert receiver.delivered("/ok") == []


@pytest.mark.django_db(transaction=True)
def test_resend_sends_an_event_again(make_job, receiver):
    event = event_for(make_job, receiver, "/ok")
    delivery.deliver(event.id)
    assert delivery.resend(event)
    assert delivery.deliver(event.id) == WebhookEvent.State.DELIVERED
    assert len(receiver.wait_for(2)) == 2
    assert event.attempt_log.count() == 2


# --- HTTPS: a real TLS receiver with a test CA (trustme) --------------------------------

TLS_HOST = "receiver.videogen.test"


@pytest.fixture
def resolved_here(monkeypatch) -> list[str]:
    """TLS_HOST resolves to 127.0.0.1 (no DNS has it); the names looked up, in order."""
    real, looked_up = socket.getaddrinfo, []

    def getaddrinfo(host, *args, **kwargs):
        looked_up.append(host)
        return real("127.0.0.1" if host == TLS_HOST else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return looked_up


@pytest.fixture
def test_ca(settings, tmp_path):
    """A test CA, trusted through VIDEOGEN_WEBHOOK_CA_BUNDLE; the receiver's host may resolve to loopback."""
    import trustme

    ca = trustme.CA()
    bundle = tmp_path / "ca-bundle.pem"
    ca.cert_pem.write_to_path(str(bundle))
    settings.VIDEOGEN_WEBHOOK_CA_BUNDLE = str(bundle)
    settings.VIDEOGEN_WEBHOOK_ALLOWED_HOSTS = [TLS_HOST]
    settings.VIDEOGEN_WEBHOOK_RETRY_BASE = 3600  # a retry is left to the sweep
    return ca


def https_receiver(tmp_path, chain: bytes, key: bytes):
    return running_receiver(slow_seconds=5, tls=tls_context(chain, key, tmp_path), host=TLS_HOST)


def issued(ca, *hosts: str, **validity) -> tuple[bytes, bytes]:
    leaf = ca.issue_cert(*hosts, **validity)
    return b"".join(blob.bytes() for blob in leaf.cert_chain_pems), leaf.private_key_pem.bytes()


def https_event(make_job, receiver) -> WebhookEvent:
    return event_for(make_job, receiver, "/ok")


@pytest.mark.django_db(transaction=True)
def test_an_https_delivery_goes_to_the_resolved_address_with_the_certificate_checked_against_the_host_name(
    make_job, test_ca, resolved_here, tmp_path
):
    with https_receiver(tmp_path, *issued(test_ca, TLS_HOST)) as receiver:
        event = https_event(make_job, receiver)
        resolved_here.clear()

        assert delivery.deliver(event.id) == WebhookEvent.State.DELIVERED

        [received] = receiver.wait_for(1)
        assert received.headers["webhook-id"] == event.id and not receiver.rejected
        # The host name was looked up once; the connection went to the address it gave
        # (create_connection "looks up" the literal), and TLS asked for the host name.
        assert resolved_here == [TLS_HOST, "127.0.0.1"]
        assert receiver.server_names == [TLS_HOST]
    assert event.attempt_log.get().status_code == 200


@pytest.mark.parametrize(
    "certificate, reason",
    [
        ("for another host name", "Hostname mismatch"),
        ("expired", "certificate has expired"),
        ("self-signed", "self-signed certificate"),
        ("from a CA not in the bundle", "unable to get local issuer certificate"),
    ],
)
@pytest.mark.django_db(transaction=True)
def test_a_certificate_that_does_not_verify_sends_nothing_and_is_retried(
    certificate, reason, make_job, test_ca, resolved_here, tmp_path
):
    import trustme

    now = datetime.now(dt_timezone.utc)
    chain, key = {
        "for another host name": lambda: issued(test_ca, "elsewhere.videogen.test"),
        "expired": lambda: issued(test_ca, TLS_HOST, not_before=now - timedelta(days=2), not_after=now - timedelta(days=1)),
        "self-signed": lambda: self_signed(TLS_HOST),
        "from a CA not in the bundle": lambda: issued(trustme.CA(), TLS_HOST),
    }[certificate]()
    with https_receiver(tmp_path, chain, key) as receiver:
        event = https_event(make_job, receiver)

        assert delivery.deliver(event.id) == WebhookEvent.State.PENDING

        attempt = event.attempt_log.get()
        assert attempt.status_code is None and "certificate verify failed" in attempt.error, attempt.error
        assert reason in attempt.error, attempt.error
        # The TLS handshake failed: no request reached the receiver.
        assert receiver.attempts == {} and receiver.deliveries == []
        assert receiver.server_names == [TLS_HOST]
    event.refresh_from_db()
    assert event.next_attempt_at > attempt.attempted_at


@pytest.mark.django_db(transaction=True)
def test_without_the_ca_bundle_the_test_cas_certificate_is_not_trusted(
    make_job, test_ca, resolved_here, tmp_path, settings
):
    settings.VIDEOGEN_WEBHOOK_CA_BUNDLE = ""
    with https_receiver(tmp_path, *issued(test_ca, TLS_HOST)) as receiver:
        event = https_event(make_job, receiver)

        assert delivery.deliver(event.id) == WebhookEvent.State.PENDING

        assert "unable to get local issuer certificate" in event.attempt_log.get().error
        assert receiver.deliveries == []
