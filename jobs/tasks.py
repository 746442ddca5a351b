"""django-q2 entry points of the jobs app (no torch here)."""

from jobs import retention, webhooks
from jobs.recovery import reap_lost_jobs


def recover_lost_jobs() -> dict[str, int]:
    return reap_lost_jobs()


def deliver_webhook(event_id: str) -> str:
    return webhooks.deliver(event_id)


def send_due_webhooks() -> int:
    return webhooks.send_due()


def expire_outputs() -> int:
    return len(retention.expire_outputs())
