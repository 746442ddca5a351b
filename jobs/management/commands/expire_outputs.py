from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from jobs.services.retention import expire_outputs
from jobs.text import plural


class Command(BaseCommand):
    help = (
        "Remove the video, poster and preview of finished jobs older than VIDEOGEN_RETENTION_DAYS, keeping "
        "each row with expired_at set (downloads then answer 410). The scheduler does this every hour."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="list what would expire, change nothing")

    def handle(self, *args, **options) -> None:
        if settings.VIDEOGEN_RETENTION_DAYS is None:
            raise CommandError("VIDEOGEN_RETENTION_DAYS is unset: outputs are kept forever.")
        dry_run = options["dry_run"]
        jobs = expire_outputs(dry_run=dry_run)
        for job in jobs:
            self.stdout.write(f"{job.id}  {job.user_id}  {job.status}  finished {job.completed_at:%Y-%m-%d %H:%M}")
        verb = "would expire" if dry_run else "expired"
        self.stdout.write(
            f"{verb} {plural(len(jobs), 'job')} finished more than {settings.VIDEOGEN_RETENTION_DAYS} days ago."
        )
