from django.apps import AppConfig


class JobsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "jobs"
    verbose_name = "Video generation jobs"

    def ready(self) -> None:
        # The modules that act on a job's changes listen to jobs.signals.
        from jobs import events, metrics, webhooks  # noqa: F401
