import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone
from rest_framework.test import APIClient

from generation.encoding import encode_mp4, write_poster
from jobs.models import Status, VideoGenerationJob
from tests.support.broker import empty_redis_queue  # noqa: F401 (an autouse fixture)
from tests.support.cluster import running_qcluster
from tests.support.database import flush_survives_deadlocks  # noqa: F401 (an autouse fixture)
from tests.support.jobs import FAST_JOB, gradient_frames


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # The default hasher spends about a second per user on purpose; the
    # tests' users (and the live server a browser logs in to) share this process.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture(autouse=True)
def queue_snapshots_inline(monkeypatch):
    """
    Queue snapshots (jobs/scheduling/estimates.py) are rebuilt in the polling thread:
    a background rebuild has its own connection and cannot see a test's
    uncommitted rows. Each test starts without a snapshot.
    """
    from jobs.scheduling import estimates
    from tests.support.estimates import InlineRebuilds

    monkeypatch.setattr(estimates, "rebuilds", InlineRebuilds())
    estimates.forget_snapshots()
    yield
    estimates.forget_snapshots()


@pytest.fixture(autouse=True)
def submit_counts_inline(monkeypatch):
    """
    Submits' metric counts are written at once, in the submitting thread: the
    writer thread has its own connection and cannot see a test's
    uncommitted rows. Nothing is left over for the next test.
    """
    from jobs.metrics import series as metrics

    monkeypatch.setattr(metrics, "submit_counts", metrics.SubmitCounts(written_every=0))
    yield
    # A test's in-memory counter (submits_counted_in_memory) leaves nothing for its exit-time write.
    metrics.submit_counts.forget()


@pytest.fixture
def submits_counted_in_memory(monkeypatch):
    """
    Submits counted as a server counts them: in memory, written by a writer
    thread. A fresh counter for the test, written when the test says (or by
    its thread every `written_every` seconds).
    """
    from jobs.metrics import series as metrics

    def counting(written_every: float = 3600.0) -> "metrics.SubmitCounts":
        counts = metrics.SubmitCounts(written_every)
        monkeypatch.setattr(metrics, "submit_counts", counts)
        return counts

    return counting


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def submit(api, db, django_capture_on_commit_callbacks):
    """
    POST /api/v1/generate as a client does, running what the view queues on
    commit; headers as Django's test client takes them (HTTP_IDEMPOTENCY_KEY=...).
    """

    def post(body: dict, **headers):
        with django_capture_on_commit_callbacks(execute=True):
            return api.post("/api/v1/generate", body, format="json", **headers)

    return post


@pytest.fixture
def operator(db) -> User:
    """Staff with the two permissions an operator needs, not a superuser (pytest-django's admin_client is one)."""
    user = User.objects.create_user("operator", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="jobs",
            codename__in=["view_videogenerationjob", "change_videogenerationjob"],
        )
    )
    return user


@pytest.fixture
def staff_client(client, operator):
    client.force_login(operator)
    return client




@pytest.fixture
def qcluster(tmp_path, media_root):
    """A real qcluster process running jobs from the test database (needs a transactional test)."""
    with running_qcluster(tmp_path / "qcluster.log", media_root) as cluster:
        yield cluster


@pytest.fixture
def make_job(db):
    def make(**fields) -> VideoGenerationJob:
        values = {
            "user_id": "alice",
            "prompt": "a cat running on the beach",
            "model_name": "tiny-random",
            "seed": 42,
            **FAST_JOB,
            "guidance_scale": 4.5,
            **fields,
        }
        return VideoGenerationJob.objects.create(**values)

    return make


@pytest.fixture
def make_completed_job(make_job, media_root):
    """A completed job with a real MP4 and poster in storage (encoded, not generated)."""

    def make(**fields) -> VideoGenerationJob:
        job = make_job(status=Status.COMPLETED, progress=100, completed_at=timezone.now(), **fields)
        frames = gradient_frames(job.num_frames, job.height, job.width)
        (media_root / "videos").mkdir(parents=True, exist_ok=True)
        (media_root / "posters").mkdir(parents=True, exist_ok=True)
        video = encode_mp4(frames, media_root / "videos" / f"{job.id}.mp4", fps=job.fps)
        write_poster(frames[0], media_root / "posters" / f"{job.id}.jpg")
        VideoGenerationJob.objects.filter(pk=job.pk).update(
            video=f"videos/{job.id}.mp4",
            poster=f"posters/{job.id}.jpg",
            file_size_bytes=video.stat().st_size,
        )
        job.refresh_from_db()
        return job

    return make
