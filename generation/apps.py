from django.apps import AppConfig


class GenerationConfig(AppConfig):
    name = "generation"
    verbose_name = "Video generation engine"

    def ready(self) -> None:
        # Connects the django-q2 worker signals; imports no torch.
        from generation import worker  # noqa: F401
