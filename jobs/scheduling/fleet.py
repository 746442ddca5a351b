"""
What the admin's Fleet page shows: every cluster (ClusterBeat, the one
liveness record), its worker processes and the job each runs, and each
queue's depth and oldest waiting job. Read whole: a fleet is tens of
clusters, and the waiting jobs are counted per model in the database.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Min
from django.utils import timezone

from jobs.scheduling.deployment import queue_for_model
from jobs.models import ClusterBeat, Status, VideoGenerationJob, WorkerGpu


@dataclass
class WorkerRow:
    host: str
    cluster: str
    slot: int | None
    device: str
    pid: int | None
    job: VideoGenerationJob | None
    beat_at: datetime | None
    live: bool
    gpu: WorkerGpu | None


@dataclass
class QueueRow:
    deployment: str
    queue: str
    model: str
    waiting: int
    oldest: VideoGenerationJob | None


def seconds_since(moment: datetime | None, now: datetime) -> float | None:
    return None if moment is None else max((now - moment).total_seconds(), 0.0)


def fleet_status() -> dict:
    now = timezone.now()
    stale_job = now - timedelta(seconds=settings.VIDEOGEN_HEARTBEAT_TIMEOUT)
    clusters = list(ClusterBeat.objects.order_by("host", "name"))
    running = {
        job.worker: job
        for job in VideoGenerationJob.objects.filter(status=Status.RUNNING).only(
            "id", "user_id", "model_name", "worker", "heartbeat_at", "current_step", "num_inference_steps"
        )
    }
    gpus = {gpu.worker: gpu for gpu in WorkerGpu.objects.all()}
    workers = []
    for cluster in clusters:
        for process in cluster.processes:
            name = f"{cluster.host}:{process['pid']} slot {process['slot']} {process['device']}"
            job = running.pop(name, None)
            # A busy worker beats with its job's heartbeat; an idle one only with its cluster.
            beat_at = job.heartbeat_at if job is not None else cluster.seen_at
            live = cluster.is_live and (job is None or (job.heartbeat_at is not None and job.heartbeat_at >= stale_job))
            workers.append(WorkerRow(cluster.host, cluster.name, process["slot"], process["device"], process["pid"],
                                     job, beat_at, live, gpus.get(name)))
    # Running jobs whose worker no beating cluster lists: a cluster gone, or one on a host not beating.
    for name, job in sorted(running.items()):
        host, _, rest = name.partition(":")
        pid, _, place = rest.partition(" slot ")
        slot, _, device = place.partition(" ")
        live = job.heartbeat_at is not None and job.heartbeat_at >= stale_job
        workers.append(WorkerRow(host, "", int(slot) if slot.isdigit() else None, device,
                                 int(pid) if pid.isdigit() else None, job, job.heartbeat_at, live, gpus.get(name)))

    queues = []
    pending = VideoGenerationJob.objects.filter(status=Status.PENDING)
    waiting = pending.order_by().values_list("deployment", "model_name").annotate(n=Count("pk"), oldest=Min("submitted_at"))
    for deployment, model, count, oldest_at in sorted(waiting):
        oldest = (pending.filter(deployment=deployment, model_name=model, submitted_at=oldest_at)
                  .only("id", "user_id", "submitted_at").first())
        queues.append(QueueRow(deployment, queue_for_model(model) or "default", model, count, oldest))
    return {
        "now": now,
        "clusters": [(cluster, seconds_since(cluster.seen_at, now)) for cluster in clusters],
        "workers": [(row, seconds_since(row.beat_at, now)) for row in workers],
        "queues": [(row, seconds_since(row.oldest.submitted_at if row.oldest else None, now)) for row in queues],
        "liveness_seconds": ClusterBeat.liveness_seconds(),
        "heartbeat_timeout": settings.VIDEOGEN_HEARTBEAT_TIMEOUT,
    }
