"""django-q2 entry points of the jobs app (no torch here)."""

from jobs.services import retention
from jobs.webhooks import delivery
from jobs.services.recovery import reap_lost_jobs


def recover_lost_jobs() -> dict[str, int]:
    return reap_lost_jobs()


def deliver_webhook(event_id: str) -> str:
    return delivery.deliver(event_id)


def send_due_webhooks() -> int:
    return delivery.send_due()


def expire_outputs() -> int:
    return len(retention.expire_outputs())
