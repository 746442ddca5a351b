"""
Operator actions on many jobs at once: the Django admin's actions and the
`rerun_failed_jobs` command both go through here, and each job through the
single-job operations of jobs/services/lifecycle.py (`job_rerun`, `job_cancel`), whose conditional updates
decide what actually changes.
"""

import datetime
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from jobs.models import ACTIVE, JobQuerySet, Status, VideoGenerationJob
from jobs.services.lifecycle import ActiveJobLimitReached, job_cancel, job_rerun

# What a skipped job was told, when its status (as selected) already ruled it out.
# A job that looked eligible but lost the conditional update was changed by
# another process between the selection and the update.
CHANGED_MEANWHILE = "changed by another process meanwhile"
# A re-run that would take its user past VIDEOGEN_MAX_ACTIVE_JOBS_PER_USER.
AT_ACTIVE_LIMIT = "user at the active-job limit"


@dataclass
class Outcome:
    """What a bulk operation changed, and why it left the rest alone."""

    changed: list[VideoGenerationJob] = field(default_factory=list)
    # reason (a status, or CHANGED_MEANWHILE) -> how many jobs
    skipped: Counter[str] = field(default_factory=Counter)

    @property
    def skipped_count(self) -> int:
        return sum(self.skipped.values())

    def describe_skipped(self) -> str:
        """'2 completed, 1 running' (most common first, then by name), or '' when none were skipped."""
        reasons = sorted(self.skipped.items(), key=lambda item: (-item[1], item[0]))
        return ", ".join(f"{count} {reason}" for reason, count in reasons)


def failed_job_list(
    *,
    user_id: str | None = None,
    job_ids: Iterable[uuid.UUID] | None = None,
    failed_since: datetime.datetime | None = None,
    failed_before: datetime.datetime | None = None,
    error_code: str | None = None,
    error_contains: str | None = None,
) -> JobQuerySet:
    """
    Failed jobs matching every filter given, oldest submission first so that a
    limited re-run serves the longest-waiting users first. The time window is
    on when the job failed (`completed_at`), which is what an operator knows
    after an incident: "everything that failed since 14:00".
    """
    jobs = VideoGenerationJob.objects.for_user(user_id).filter(status=Status.FAILED)
    if job_ids is not None:
        jobs = jobs.filter(pk__in=list(job_ids))
    if failed_since is not None:
        jobs = jobs.filter(completed_at__gte=failed_since)
    if failed_before is not None:
        jobs = jobs.filter(completed_at__lt=failed_before)
    if error_code is not None:
        jobs = jobs.filter(error_code=error_code)
    if error_contains is not None:
        jobs = jobs.filter(error_message__icontains=error_contains)
    return jobs.order_by("submitted_at", "id")


def jobs_rerun(
    jobs: Iterable[VideoGenerationJob],
    *,
    on_each: Callable[[VideoGenerationJob, bool], None] | None = None,
) -> Outcome:
    """
    Re-run every failed job of `jobs` (each queued once it is committed, with
    one more attempt). Others are skipped by their status; a job that was
    failed when selected but is no longer by the time of its update is skipped
    too, so two operators re-running the same jobs at once queue each only once.
    """
    return _apply(jobs, job_rerun, eligible={Status.FAILED}, on_each=on_each)


def jobs_cancel(
    jobs: Iterable[VideoGenerationJob],
    *,
    on_each: Callable[[VideoGenerationJob, bool], None] | None = None,
) -> Outcome:
    """Cancel every pending or running job of `jobs`; skip the others, saying why."""
    return _apply(jobs, job_cancel, eligible=ACTIVE, on_each=on_each)


def _apply(
    jobs: Iterable[VideoGenerationJob],
    service: Callable[[VideoGenerationJob], bool],
    *,
    eligible: set[Status],
    on_each: Callable[[VideoGenerationJob, bool], None] | None,
) -> Outcome:
    outcome = Outcome()
    for job in jobs:
        if job.status not in eligible:
            # Not worth an UPDATE that cannot match; the status read is the reason.
            outcome.skipped[str(job.status)] += 1
            changed = False
        else:
            try:
                changed = service(job)
            except ActiveJobLimitReached:
                outcome.skipped[AT_ACTIVE_LIMIT] += 1
                changed = None
            if changed:
                outcome.changed.append(job)
            elif changed is False:
                outcome.skipped[CHANGED_MEANWHILE] += 1
            changed = bool(changed)
        if on_each is not None:
            on_each(job, changed)
    return outcome
