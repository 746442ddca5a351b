"""
What the workers and the scheduler record: users' fair-share weights, each
qcluster's liveness (ClusterBeat, one rule), the stored queue snapshots,
the job metrics' series and the workers' GPU memory.
"""

from datetime import timedelta

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from jobs.models.job import USER_ID_MAX_LENGTH, this_deployment


class UserWeight(models.Model):
    """
    An operator's share for one user under the fair policy: weight 2 gets
    twice the worker time of weight 1. Users not listed weigh 1.
    """

    user_id = models.CharField(max_length=USER_ID_MAX_LENGTH, unique=True)
    weight = models.FloatField(default=1.0, validators=[MinValueValidator(0.01), MaxValueValidator(1000)])
    note = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        db_table = "video_generation_user_weights"
        ordering = ["user_id"]

    def __str__(self) -> str:
        return f"{self.user_id} × {self.weight:g}"


class ClusterBeatQuerySet(models.QuerySet):
    def live(self) -> "ClusterBeatQuerySet":
        """The clusters that beat within ClusterBeat.liveness_seconds(): the one rule for "alive"."""
        return self.filter(seen_at__gte=timezone.now() - timedelta(seconds=ClusterBeat.liveness_seconds()))


class ClusterBeat(models.Model):
    """
    A qcluster, refreshed by its parent's reaper thread every
    VIDEOGEN_REAPER_INTERVAL: where it runs, which queue it serves and its
    worker processes. The one liveness record: the estimates count live
    workers from it, /metrics reports them, the admin's Fleet page shows it.
    """

    # host:pid of the qcluster parent; a host may run several clusters.
    name = models.CharField(max_length=200, primary_key=True)
    host = models.CharField(max_length=200, default="")
    deployment = models.CharField(max_length=100, default=this_deployment)
    # "" for the default queue, else a VIDEOGEN_MODEL_QUEUES queue.
    queue = models.CharField(max_length=100, blank=True, default="")
    # Worker processes it runs (VIDEOGEN_WORKERS): the estimates' capacity.
    workers = models.PositiveSmallIntegerField()
    # Those alive at the last beat, each holding a slot: [{"pid", "slot", "device"}], by slot.
    processes = models.JSONField(default=list, blank=True)
    seen_at = models.DateTimeField()

    objects = ClusterBeatQuerySet.as_manager()

    class Meta:
        db_table = "video_generation_cluster_beats"
        verbose_name = "Fleet"
        verbose_name_plural = "Fleet"

    @staticmethod
    def liveness_seconds() -> float:
        """A cluster silent for longer is gone: two missed beats, and never less than a job's heartbeat timeout."""
        return max(2 * settings.VIDEOGEN_REAPER_INTERVAL, settings.VIDEOGEN_HEARTBEAT_TIMEOUT)

    @property
    def is_live(self) -> bool:
        return timezone.now() - self.seen_at <= timedelta(seconds=self.liveness_seconds())


class QueueSnapshot(models.Model):
    """
    A queue's order and estimated starts as one process of the deployment
    last built them (jobs/scheduling/estimates.py), so that the others load them
    instead of each reading the whole queue again.
    """

    # "" for the default queue, else a VIDEOGEN_MODEL_QUEUES queue.
    queue = models.CharField(max_length=100, primary_key=True)
    taken_at = models.DateTimeField()
    # How long the build took: rebuilds wait for estimates.REBUILD_SHARE of it.
    build_seconds = models.FloatField()
    # estimates.encode_standing(): each waiting job's id, position and estimated start.
    standing = models.BinaryField()
    # A process is building the next snapshot until then: the others wait for it instead of building too.
    building_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "video_generation_queue_snapshots"


class MetricSeries(models.Model):
    """
    One Prometheus counter or histogram series for job events, kept in the
    database so that every process that changes jobs (gunicorn workers, the
    qcluster's workers, on any host) adds to the same total (jobs/metrics/series.py).
    """

    name = models.CharField(max_length=100)
    # Rendered Prometheus labels, 'model="tiny-random",status="completed"'.
    labels = models.CharField(max_length=500)
    value = models.FloatField(default=0)

    class Meta:
        db_table = "videogen_metric_series"
        constraints = [models.UniqueConstraint(fields=["name", "labels"], name="metric_series_unique")]


class WorkerGpu(models.Model):
    """A worker process's CUDA memory, written after each job and with each heartbeat."""

    worker = models.CharField(max_length=200, primary_key=True)
    host = models.CharField(max_length=200)
    device = models.CharField(max_length=50)
    used_bytes = models.BigIntegerField()
    peak_bytes = models.BigIntegerField()
    updated_at = models.DateTimeField()

    class Meta:
        db_table = "videogen_worker_gpus"
