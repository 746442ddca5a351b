"""django-q2 entry points of the jobs app (no torch here)."""

from jobs.recovery import reap_lost_jobs


def recover_lost_jobs() -> dict[str, int]:
    return reap_lost_jobs()


def deliver_webhook(event_id: str) -> str:
    from jobs.webhooks import deliver

    return deliver(event_id)


def send_due_webhooks() -> int:
    from jobs.webhooks import send_due

    return send_due()


def expire_outputs() -> int:
    from jobs.retention import expire_outputs

    return len(expire_outputs())
