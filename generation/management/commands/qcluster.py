"""
django-q2's qcluster, stopping gracefully and recovering lost jobs.

On SIGTERM or SIGINT the workers that are running a job hand it back to the
queue at their next denoising step; one that has not within
VIDEOGEN_SHUTDOWN_TIMEOUT seconds (a model still loading, a long decode) is
killed and its job handed back for it. A stopped cluster never leaves a job
`running`. (django-q2 alone waits for the running task with no bound.) This
holds whoever gets the signal: the parent only (docker), every process of
the group (systemd's KillMode=control-group, a terminal's Ctrl-C): only the
parent acts on it, the others ignore it or turn it into a hand-back.

The parent also reaps lost jobs every VIDEOGEN_REAPER_INTERVAL seconds from
a thread: it runs no jobs and never imports torch, so recovery never waits
behind a generation.

`generation` is listed before `django_q` in INSTALLED_APPS so that this
command is the one `manage.py qcluster` runs.
"""

import logging
import os
import shutil
import signal
import sys
import threading
import uuid
from time import sleep

from django.conf import settings
from django.db import connection
from django_q.cluster import Cluster, Sentinel, get_mp_context
from django_q.management.commands.qcluster import Command as DjangoQClusterCommand

from generation.devices import held_slots, slot_directory
from generation.worker import SHUTDOWN_SIGNAL, worker_queue
from jobs.scheduling.estimates import cluster_beat, cluster_gone
from jobs.models import Status, VideoGenerationJob
from jobs.services.recovery import job_hand_back, parse_worker_name, reap_lost_jobs
from jobs.text import plural

logger = logging.getLogger(__name__)


class GracefulSentinel(Sentinel):
    """
    django-q2's sentinel (it spawns and guards the workers), made deaf to
    SIGTERM. django-q2 leaves it at the default, so a SIGTERM sent to the
    whole process group killed the sentinel at once, sometimes while it held
    the lock of the stop event that the parent then waits on forever (the
    parent hung in a futex in about one stop in three). Its children, forked
    from it, inherit this: the monitor and pusher ignore SIGTERM too, and a
    worker turns it into a hand-back (generation.worker). The parent alone
    stops the cluster, through the stop event, as django-q2 intends.
    """

    def start(self):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # The workers' slot locks (generation.devices.SlotClaim), fresh for this cluster.
        directory = slot_directory(os.getpid())
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        try:
            super().start()
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def reincarnate(self, process):
        # django-q2 replaces a worker past its timeout first and only then
        # sends it SIGTERM, which our workers turn into a hand-back request.
        # Kill it outright, and wait for it, so the replacement never shares
        # its GPU slot with it (the slot's lock is released when it is gone).
        if process in self.pool and process.timer.value == 0 and process.is_alive():
            os.kill(process.pid, signal.SIGKILL)
            process.join()
        super().reincarnate(process)


class GracefulCluster(Cluster):
    stopping = False

    def start(self) -> int:
        # As django-q2's Cluster.start, with our sentinel.
        self.stop_event = get_mp_context().Event()
        self.start_event = get_mp_context().Event()
        if self.stopping:
            # A signal came before there was an event to set (sig_handler):
            # the sentinel starts, guards once and stops.
            self.stop_event.set()
        self.sentinel = get_mp_context().Process(
            target=GracefulSentinel,
            name=f"Process-{uuid.uuid4().hex}",
            args=(self.stop_event, self.start_event, self.cluster_id, self.broker, self.timeout),
        )
        self.sentinel.start()
        logger.info("Q Cluster %s starting.", self.name)
        # Polled, not wait(): a signal handled while blocked in wait() deadlocks (django-q2's note).
        while self.start_event and not self.start_event.is_set():
            if not self.sentinel.is_alive():
                if self.sentinel.exitcode == 0:
                    break
                raise RuntimeError(f"Q Cluster {self.name} failed to start: sentinel exited with code "
                                   f"{self.sentinel.exitcode}")
            sleep(0.1)
        return self.pid

    def sig_handler(self, signum, frame):
        if self.stopping:
            # A second signal (Ctrl-C twice, or SIGINT then SIGTERM from a
            # process manager) would re-enter django-q2's stop() while the
            # first still holds its event's lock: a deadlock. The first stop
            # is bounded already.
            return
        self.stopping = True
        if self.start_event is None or not self.start_event.is_set():
            # Still starting (Ctrl-C right after `make run`): django-q2's
            # stop() would find no sentinel alive yet and do nothing, and the
            # cluster would then run on. The stop event instead makes the
            # sentinel stop as soon as it has started; nothing runs a job yet.
            if self.stop_event is not None:
                self.stop_event.set()
            return
        if self.sentinel is not None:
            busy = self.workers_running_jobs()
            for pid in busy:
                os.kill(pid, SHUTDOWN_SIGNAL)
            if busy:
                logger.info("asked %s to hand their jobs back", plural(len(busy), "busy worker"))
                timer = threading.Timer(settings.VIDEOGEN_SHUTDOWN_TIMEOUT, self.stop_stragglers, args=(busy,))
                timer.daemon = True
                timer.start()
        super().sig_handler(signum, frame)

    def worker_pids(self) -> list[int]:
        import psutil

        try:
            return [child.pid for child in psutil.Process(self.sentinel.pid).children()]
        except psutil.NoSuchProcess:
            return []

    def running_jobs_by_pid(self) -> dict[int, VideoGenerationJob]:
        """This cluster's workers that are running a job, with that job."""
        pids = set(self.worker_pids())
        running = VideoGenerationJob.objects.filter(
            status=Status.RUNNING, worker__startswith=f"{settings.VIDEOGEN_WORKER_HOST}:"
        )
        jobs = {}
        for job in running:
            parsed = parse_worker_name(job.worker)
            if parsed is not None and parsed[0] == settings.VIDEOGEN_WORKER_HOST and parsed[1] in pids:
                jobs[parsed[1]] = job
        return jobs

    def workers_running_jobs(self) -> list[int]:
        return list(self.running_jobs_by_pid())

    def stop_stragglers(self, pids: list[int]) -> None:
        running = self.running_jobs_by_pid()
        for pid in pids:
            job = running.get(pid)
            if job is None:
                continue
            logger.warning("worker %s did not hand job %s back in time: killing it", job.worker, job.id)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            job_hand_back(job)


class Reaper(threading.Thread):
    """Reaps lost jobs every VIDEOGEN_REAPER_INTERVAL seconds, in the qcluster parent."""

    def __init__(self, interval: float, cluster=None):
        super().__init__(name="videogen reaper", daemon=True)
        self.interval = interval
        # Its workers (the sentinel's children holding a slot) are listed at
        # each beat, for the metrics' videogen_workers_alive and the Fleet page.
        self.worker_pids = cluster.worker_pids if cluster else None
        self.slots = (lambda: slot_directory(cluster.sentinel.pid)) if cluster else None
        self.stopped = threading.Event()

    def run(self) -> None:
        # Several hosts' reapers may run at once: recovery is a conditional update, so one wins.
        self.beat()
        while not self.stopped.wait(self.interval):
            self.beat()
            try:
                counts = reap_lost_jobs()
            except Exception:
                logger.exception("reaping lost jobs failed")
                connection.close()
                continue
            finally:
                connection.close_if_unusable_or_obsolete()
            if any(counts.values()):
                logger.info("reaper recovered lost jobs: %s", counts)
        try:
            cluster_gone(cluster_beat_name())
        except Exception:
            logger.warning("could not remove this cluster's beat", exc_info=True)
        connection.close()

    def processes(self) -> list[dict]:
        """This cluster's live worker processes, each holding a slot, by slot."""
        alive = set(self.worker_pids())
        held = sorted((slot, pid) for slot, pid in held_slots(self.slots()).items() if pid in alive)
        return [{"pid": pid, "slot": slot, "device": settings.VIDEOGEN_SLOT_DEVICES[slot]}
                for slot, pid in held if slot < len(settings.VIDEOGEN_SLOT_DEVICES)]

    def beat(self) -> None:
        """
        This cluster's one liveness record (ClusterBeat): its worker processes,
        for the estimates, /metrics and the admin's Fleet page.
        """
        try:
            processes = self.processes() if self.worker_pids is not None else []
            cluster_beat(cluster_beat_name(), worker_queue(), settings.VIDEOGEN_WORKERS, processes)
        except Exception:
            logger.warning("could not record this cluster's beat", exc_info=True)
            connection.close()


def cluster_beat_name() -> str:
    return f"{settings.VIDEOGEN_WORKER_HOST}:{os.getpid()}"


class Command(DjangoQClusterCommand):
    def handle(self, *args, **options):
        # As django-q2's own command, with our cluster.
        settings.SECRET_KEY
        if options.get("cluster_name"):
            os.environ["Q_CLUSTER_NAME"] = options["cluster_name"]
        cluster = GracefulCluster()
        cluster.start()
        if options.get("run_once", False):
            cluster.stop()
            return
        # Started only now: the sentinel is forked, and this process forks nothing more.
        reaper = Reaper(settings.VIDEOGEN_REAPER_INTERVAL, cluster)
        reaper.start()
        # The stop happens in the signal handler (in this thread); then the sentinel exits.
        while cluster.sentinel.is_alive():
            cluster.sentinel.join(1)
        reaper.stopped.set()
        # Let it take this cluster's workers off the metrics (a reap in progress takes milliseconds).
        reaper.join(5)
        leave_now()


def leave_now() -> None:
    """
    Exit without the interpreter's teardown of a Django process, which took
    0.7-5 s of CPU on a busy 2-core box, while Ctrl-C on `make run` waited
    (bench/RESULTS.md, make run stops). Everything is stopped and written by now.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
