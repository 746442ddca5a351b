"""
The job series, counted in the database (MetricSeries) where a job's status
changes, by whichever process changes it; submits summed in memory and
written once a second (SubmitCounts); and their text for a scrape
(render_jobs), with the gauges read from the jobs table and the workers'
small tables.
"""

import atexit
import collections
import contextlib
import datetime
import logging
import os
import threading
import time

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Count
from django.dispatch import receiver
from django.utils import timezone

from jobs.models import ACTIVE, FINISHED, ClusterBeat, MetricSeries, Status, VideoGenerationJob, WorkerGpu
from jobs.models.signals import job_status_changed
from jobs.scheduling.deployment import served_models

logger = logging.getLogger(__name__)

# Seconds. A job runs for seconds (tiny models) to an hour; it waits for
# milliseconds (an idle worker) to hours (a backlog).
DURATION_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)
WAIT_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600)

HELP = {
    "videogen_jobs_submitted_total": ("counter", "Jobs accepted by POST /generate."),
    "videogen_jobs_finished_total": ("counter", "Jobs that finished, by final status and error code."),
    "videogen_job_duration_seconds": ("histogram", "Running to finished, per run that had started."),
    "videogen_job_wait_seconds": ("histogram", "Submitted to started."),
    "videogen_jobs_pending": ("gauge", "Jobs waiting for a worker."),
    "videogen_jobs_running": ("gauge", "Jobs a worker is running."),
    "videogen_workers_alive": ("gauge", "Worker processes of each host's qcluster, as its parent last saw them."),
    "videogen_gpu_memory_used_bytes": ("gauge", "CUDA memory reserved by the workers on each device."),
    "videogen_gpu_memory_peak_bytes": ("gauge", "The most CUDA memory the workers on each device have reserved."),
}


def label_text(**labels: str) -> str:
    return ",".join(f'{name}="{_escape(str(value))}"' for name, value in sorted(labels.items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


# --- Recording job events (any process) ---------------------------------------


def _add(rows: list[tuple[str, str, float]], *, flush: bool = True) -> bool:
    """
    Add to database series, creating them at need; never fails the caller
    over a metric (False: the database did not take them). One statement,
    so one round trip and atomic by itself outside a transaction (a
    count costs one query, not a transaction's three); inside one, a
    savepoint keeps a failure here from aborting the caller's work.

    flush=False, outside a transaction on PostgreSQL: the statement's
    commit does not wait for the WAL to reach the disk (as long as a whole
    submit's durable commit; bench/RESULTS.md, hot paths).
    For counts a server crash may lose without harm. SET LOCAL in the same
    round trip makes the statement's implicit transaction skip the flush,
    and only it.
    """
    totals: dict[tuple[str, str], float] = {}
    for name, labels, value in rows:
        totals[(name, labels)] = totals.get((name, labels), 0.0) + value
    sql = (
        "INSERT INTO videogen_metric_series (name, labels, value) VALUES "
        + ", ".join(["(%s, %s, %s)"] * len(totals))
        + " ON CONFLICT (name, labels) DO UPDATE SET value = videogen_metric_series.value + excluded.value"
    )
    params = [item for (name, labels), value in totals.items() for item in (name, labels, value)]
    if not flush and connection.vendor == "postgresql" and not connection.in_atomic_block:
        sql = "SET LOCAL synchronous_commit TO OFF; " + sql
    try:
        with transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext():
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
    except DatabaseError:
        logger.warning("could not record metrics %s", sorted({row[0] for row in rows}), exc_info=True)
        return False
    return True


def _histogram(name: str, buckets: tuple, seconds: float, **labels: str) -> list[tuple[str, str, float]]:
    rows = [(f"{name}_bucket", label_text(**labels, le=_number(le)), 1.0) for le in buckets if seconds <= le]
    rows.append((f"{name}_bucket", label_text(**labels, le="+Inf"), 1.0))
    rows.append((f"{name}_sum", label_text(**labels), max(seconds, 0.0)))
    rows.append((f"{name}_count", label_text(**labels), 1.0))
    return rows


def _number(value: float) -> str:
    return repr(float(value))


# Submits are counted in memory and written by a thread of each process's
# own, at most once a SUBMITS_WRITTEN_EVERY seconds, and at exit: a
# submit's own statement for its count was one of its six round trips to
# the database (bench/RESULTS.md, hot paths). A process killed outright
# loses at most its last second's count, as a database crash loses the
# counts' unflushed commits (flush=False).
SUBMITS_WRITTEN_EVERY = 1.0


class SubmitCounts:
    """
    One process's submits not yet written, by model, and the thread that
    writes them every `written_every` seconds; with 0, each submit's count
    is written at once, in the submitting thread.
    """

    def __init__(self, written_every: float):
        self.written_every = written_every
        self._counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._waiting = threading.Event()
        self._writer: threading.Thread | None = None

    def add(self, model: str) -> None:
        with self._lock:
            self._counts[model] += 1
            if self.written_every and self._writer is None:
                self._writer = threading.Thread(target=self._write_forever, name="submit counts", daemon=True)
                self._writer.start()
                atexit.register(self.write)
        if self.written_every:
            self._waiting.set()
        else:
            self.write()

    def write(self) -> None:
        """Write the counts so far; any the database refuses are kept for the next write."""
        with self._lock:
            counts, self._counts = self._counts, collections.Counter()
        if not counts:
            return
        if not _add(_submitted_rows(counts), flush=False):
            with self._lock:
                self._counts.update(counts)

    def forget(self) -> None:
        with self._lock:
            self._counts.clear()

    def _write_forever(self) -> None:
        while True:
            if not self._waiting.is_set():
                # No submit since the last write: hold no connection while idle.
                connection.close()
            self._waiting.wait()
            time.sleep(self.written_every)
            self._waiting.clear()
            self.write()
            # This thread's own connection: a broken one is replaced at the next write.
            connection.close_if_unusable_or_obsolete()

    def after_fork(self) -> None:
        # A child has no writer thread, and its parent's counts are the parent's to write.
        self._counts = collections.Counter()
        self._lock = threading.Lock()
        self._waiting = threading.Event()
        self._writer = None


submit_counts = SubmitCounts(SUBMITS_WRITTEN_EVERY)
os.register_at_fork(after_in_child=submit_counts.after_fork)


def _submitted_rows(counts: dict[str, int]) -> list[tuple[str, str, float]]:
    return [("videogen_jobs_submitted_total", label_text(model=model), float(n)) for model, n in counts.items()]


def record_submitted(model: str) -> None:
    submit_counts.add(model)


@receiver(job_status_changed, dispatch_uid="jobs.metrics.series.status_changed")
def _status_changed(sender, *, job, status: str, **kwargs) -> None:
    rows = transition_rows(job, status)
    if rows:
        # Counted once the change commits, by a statement of its own: no
        # savepoint inside the change's transaction, and none for a rollback.
        transaction.on_commit(lambda: _add(rows))


def transition_rows(job, to: str) -> list[tuple[str, str, float]]:
    """The series a job's move to `to` adds to, read from the job as written."""
    rows = []
    if to == Status.RUNNING and job.started_at and job.submitted_at:
        wait = (job.started_at - job.submitted_at).total_seconds()
        rows += _histogram("videogen_job_wait_seconds", WAIT_BUCKETS, wait, model=job.model_name)
    elif to in FINISHED:
        rows.append((
            "videogen_jobs_finished_total",
            label_text(model=job.model_name, status=str(to), error_code=job.error_code or ""),
            1.0,
        ))
        if job.started_at and job.completed_at:
            duration = (job.completed_at - job.started_at).total_seconds()
            rows += _histogram("videogen_job_duration_seconds", DURATION_BUCKETS, duration, model=job.model_name)
    return rows


def record_gpu_memory(worker: str, device: str) -> None:
    """In a worker process on CUDA: its reserved and peak-reserved memory on its device."""
    if not device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_initialized():
        return
    try:
        WorkerGpu.objects.update_or_create(
            worker=worker,
            defaults={
                "host": settings.VIDEOGEN_WORKER_HOST,
                "device": device,
                "used_bytes": torch.cuda.memory_reserved(),
                "peak_bytes": torch.cuda.max_memory_reserved(),
                "updated_at": timezone.now(),
            },
        )
    except DatabaseError:
        logger.warning("could not record GPU memory", exc_info=True)


def render_jobs() -> str:
    # This process's own submits first (other processes' are at most a second behind).
    submit_counts.write()
    samples: dict[str, list[str]] = {name: [] for name in HELP}
    for name, labels, value in MetricSeries.objects.order_by("name", "labels").values_list("name", "labels", "value"):
        family = name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
        samples.setdefault(family, []).append(f"{name}{{{labels}}} {_value(value)}")

    # The gauges read active jobs only (the status index), every served model
    # shown, 0 included, so a dashboard sees a queue drain to nothing.
    active = {(model, status): 0 for model in served_models() for status in ACTIVE}
    counts = VideoGenerationJob.objects.filter(status__in=ACTIVE).values_list("model_name", "status").annotate(n=Count("pk"))
    for model, status, count in counts.order_by():
        active[(model, status)] = count
    for (model, status), count in sorted(active.items()):
        family = "videogen_jobs_pending" if status == Status.PENDING else "videogen_jobs_running"
        samples[family].append(f"{family}{{{label_text(model=model)}}} {count}")

    # A cluster that stopped beating counts none (ClusterBeat's one rule); its host stays listed.
    live = set(ClusterBeat.objects.live().values_list("name", flat=True))
    hosts: dict[str, int] = {}
    for name, host, processes in ClusterBeat.objects.order_by("host").values_list("name", "host", "processes"):
        hosts[host] = hosts.get(host, 0) + (len(processes) if name in live else 0)
    for host, alive in hosts.items():
        samples["videogen_workers_alive"].append(f"videogen_workers_alive{{{label_text(host=host)}}} {alive}")

    gpu_fresh = timezone.now() - datetime.timedelta(seconds=3 * settings.VIDEOGEN_HEARTBEAT_INTERVAL + 60)
    per_device: dict[tuple[str, str], list[int]] = {}
    for row in WorkerGpu.objects.filter(updated_at__gte=gpu_fresh).order_by("host", "device"):
        totals = per_device.setdefault((row.host, row.device), [0, 0])
        totals[0] += row.used_bytes
        totals[1] += row.peak_bytes
    for (host, device), (used, peak) in per_device.items():
        labels = label_text(host=host, device=device)
        samples["videogen_gpu_memory_used_bytes"].append(f"videogen_gpu_memory_used_bytes{{{labels}}} {used}")
        samples["videogen_gpu_memory_peak_bytes"].append(f"videogen_gpu_memory_peak_bytes{{{labels}}} {peak}")

    lines = []
    for family, rows in samples.items():
        kind, text = HELP.get(family, ("untyped", ""))
        lines += [f"# HELP {family} {text}", f"# TYPE {family} {kind}", *rows]
    return "\n".join(lines) + "\n"


def _value(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)
