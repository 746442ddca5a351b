"""django-q2 entry points of the jobs app (no torch here)."""

from jobs.recovery import reap_lost_jobs


def recover_lost_jobs() -> dict[str, int]:
    return reap_lost_jobs()
