import argparse
import datetime
import uuid
from collections.abc import Iterator

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from jobs.models import ErrorCode, VideoGenerationJob
from jobs.services.operations import failed_job_list, jobs_rerun
from jobs.text import plural

# Jobs listed in full before the re-run; the rest are counted (-v 2 lists all).
LIST_LIMIT = 50
# From this many jobs on, a progress bar shows how far the re-run has got.
PROGRESS_BAR_FROM = 20
# Jobs are read in batches of this many, so a re-run of a million failures
# never holds them all in memory.
BATCH_SIZE = 500


class Command(BaseCommand):
    help = (
        "Re-run failed jobs: each matching job goes back to pending with one more attempt and is queued "
        "again with its original parameters (seed included). A job that stopped being failed meanwhile is "
        "skipped, so two runs at once never queue a job twice."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--user-id", metavar="ID", help="only this user's jobs (exact match)")
        parser.add_argument(
            "--job-id",
            action="append",
            type=job_id_argument,
            dest="job_ids",
            metavar="UUID",
            help="only this job; repeat for several",
        )
        parser.add_argument(
            "--since",
            type=moment_argument,
            metavar="DATE",
            help="jobs that failed on or after this day (YYYY-MM-DD, UTC) or instant (ISO 8601)",
        )
        parser.add_argument(
            "--until",
            type=moment_argument,
            metavar="DATE",
            help="jobs that failed on or before this day (YYYY-MM-DD, UTC), or before this instant (ISO 8601)",
        )
        errors = parser.add_mutually_exclusive_group()
        errors.add_argument("--error-code", choices=ErrorCode.values, help="only failures of this class")
        errors.add_argument("--error-contains", metavar="TEXT", help="only failures whose message contains TEXT")
        parser.add_argument(
            "--limit", type=positive_int_argument, metavar="N", help="re-run at most this many (oldest first)"
        )
        parser.add_argument("--dry-run", action="store_true", help="list what would be re-run, change nothing")

    def handle(self, *args, **options) -> None:
        user_id = options["user_id"]
        if user_id is not None:
            user_id = user_id.strip()
            if not user_id:
                raise CommandError("--user-id must not be blank.")
        failed_since = start_of(options["since"]) if options["since"] is not None else None
        failed_before = end_of(options["until"]) if options["until"] is not None else None
        if failed_since is not None and failed_before is not None and failed_since >= failed_before:
            raise CommandError(f"--since ({options['since']}) must be before --until ({options['until']}).")
        error_contains = options["error_contains"]
        if error_contains is not None and not error_contains.strip():
            raise CommandError("--error-contains must not be blank.")

        jobs = failed_job_list(
            user_id=user_id,
            job_ids=options["job_ids"],
            failed_since=failed_since,
            failed_before=failed_before,
            error_code=options["error_code"],
            error_contains=error_contains,
        )
        if options["limit"] is not None:
            jobs = jobs[: options["limit"]]
        # Ids only: the selection is fixed now, and rows are read in batches.
        job_ids = list(jobs.values_list("pk", flat=True))
        if not job_ids:
            self.stdout.write("No failed jobs match.")
            return

        if options["verbosity"] >= 1:
            self.list_jobs(job_ids, everything=options["verbosity"] >= 2)
        if options["dry_run"]:
            self.stdout.write(f"Dry run: {plural(len(job_ids), 'job')} would be re-run; nothing was changed.")
            return

        progress = ProgressBar(self.stderr, len(job_ids)) if len(job_ids) >= PROGRESS_BAR_FROM else None
        outcome = jobs_rerun(in_batches(job_ids), on_each=progress.step if progress else None)
        if progress:
            progress.close()

        self.stdout.write(
            self.style.SUCCESS(f"Re-ran {plural(len(outcome.changed), 'job')}: pending again and queued.")
        )
        if outcome.skipped:
            self.stdout.write(
                self.style.WARNING(
                    f"Skipped {plural(outcome.skipped_count, 'job')} no longer failed (another run or an operator "
                    f"got there first): {outcome.describe_skipped()}."
                )
            )

    def list_jobs(self, job_ids: list[uuid.UUID], *, everything: bool) -> None:
        shown = job_ids if everything else job_ids[:LIST_LIMIT]
        self.stdout.write(f"{plural(len(job_ids), 'failed job')} to re-run:")
        for job in in_batches(shown):
            failed_at = job.completed_at.isoformat(timespec="seconds") if job.completed_at else "-"
            error = (job.error_message or "-").splitlines()[0][:80]
            self.stdout.write(
                f"  {job.id}  user={job.user_id}  model={job.model_name}  attempts={job.attempts}  "
                f"failed={failed_at}  [{job.error_code or '-'}] {error}"
            )
        if len(shown) < len(job_ids):
            self.stdout.write(f"  ... and {len(job_ids) - len(shown)} more (-v 2 lists them all)")


class ProgressBar:
    """One line on stderr, redrawn when the percentage moves."""

    WIDTH = 30

    def __init__(self, stream, total: int):
        self.stream = stream
        self.total = total
        self.done = 0
        self.shown_percent = -1
        self.draw()

    def step(self, job: VideoGenerationJob, changed: bool) -> None:
        self.done += 1
        self.draw()

    def draw(self) -> None:
        percent = self.done * 100 // self.total
        if percent == self.shown_percent:
            return
        self.shown_percent = percent
        filled = self.WIDTH * self.done // self.total
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        # Plain text: stderr's default style is the error colour.
        self.stream.write(f"\rRe-running [{bar}] {percent:3d}% {self.done}/{self.total}", style_func=str, ending="")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("", style_func=str)


def in_batches(job_ids: list[uuid.UUID]) -> Iterator[VideoGenerationJob]:
    """The jobs, freshly read in batches, in the order of job_ids; deleted ones are left out."""
    for start in range(0, len(job_ids), BATCH_SIZE):
        chunk = job_ids[start : start + BATCH_SIZE]
        found = VideoGenerationJob.objects.in_bulk(chunk)
        for pk in chunk:
            if pk in found:
                yield found[pk]


def job_id_argument(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a job id (a UUID)")


def positive_int_argument(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number")
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def moment_argument(value: str) -> datetime.date | datetime.datetime:
    """A day (YYYY-MM-DD) or an instant (ISO 8601; UTC when it names no offset)."""
    try:
        moment = parse_date(value) or parse_datetime(value)
    except ValueError:
        moment = None  # well formed but impossible, e.g. 2024-02-30
    if moment is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD) or an ISO 8601 date and time")
    if isinstance(moment, datetime.datetime) and timezone.is_naive(moment):
        moment = timezone.make_aware(moment, datetime.timezone.utc)
    return moment


def start_of(moment: datetime.date | datetime.datetime) -> datetime.datetime:
    if isinstance(moment, datetime.datetime):
        return moment
    return datetime.datetime.combine(moment, datetime.time.min, tzinfo=datetime.timezone.utc)


def end_of(moment: datetime.date | datetime.datetime) -> datetime.datetime:
    """The exclusive end: an instant as given, a day up to and including its last moment."""
    if isinstance(moment, datetime.datetime):
        return moment
    return start_of(moment + datetime.timedelta(days=1))
