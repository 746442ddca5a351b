"""The Python client's tests: where it lives, and the servers they run it against."""

from pathlib import Path

from django.conf import settings

from tests.support.cluster import test_database_url
from tests.support.images import FLF, I2V
from tests.support.receiver import SECRET

CLIENT_ROOT = Path(__file__).resolve().parents[2] / "clients" / "python"
MODELS = f"tiny-random,{I2V},{FLF}"
WEBHOOKS = {"VIDEOGEN_WEBHOOK_SECRET": SECRET, "VIDEOGEN_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"}


def server_env(media: Path, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": test_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "VIDEOGEN_QUEUE_NAME": settings.Q_CLUSTER["name"],
        "VIDEOGEN_MEDIA_ROOT": str(media),
        "VIDEOGEN_MODELS": MODELS,
        **extra,
    }
