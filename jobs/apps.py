from django.apps import AppConfig


class JobsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "jobs"
    verbose_name = "Video generation jobs"

    def ready(self) -> None:
        # Connects the publisher of job changes to job_changed (jobs.signals).
        from jobs import events  # noqa: F401
