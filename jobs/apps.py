from django.apps import AppConfig


class JobsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "jobs"
    verbose_name = "Video generation jobs"

    def ready(self) -> None:
        # The modules that act on a job's changes listen to jobs.models.signals.
        from jobs.api import events  # noqa: F401
        from jobs.metrics import series  # noqa: F401
        from jobs.webhooks import delivery  # noqa: F401
