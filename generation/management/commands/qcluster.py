"""
django-q2's qcluster, stopping gracefully: on SIGTERM or SIGINT the workers
that are running a job hand it back to the queue at their next denoising
step; one that has not within VIDEOGEN_SHUTDOWN_TIMEOUT seconds (a model
still loading, a long decode) is killed and its job handed back for it. A
stopped cluster never leaves a job `running`. (django-q2 alone waits for the
running task with no bound.) `generation` is listed before `django_q` in
INSTALLED_APPS so that this command is the one `manage.py qcluster` runs.
"""

import logging
import os
import signal
import threading

from django.conf import settings
from django_q.cluster import Cluster
from django_q.management.commands.qcluster import Command as DjangoQClusterCommand

from generation.worker import SHUTDOWN_SIGNAL
from jobs.models import Status, VideoGenerationJob
from jobs.recovery import worker_name

logger = logging.getLogger(__name__)


class GracefulCluster(Cluster):
    stopping = False

    def sig_handler(self, signum, frame):
        if self.stopping:
            # A second signal (Ctrl-C twice, or SIGINT then SIGTERM from a
            # process manager) would re-enter django-q2's stop() while the
            # first still holds its event's lock: a deadlock. The first stop
            # is bounded already.
            return
        self.stopping = True
        if self.sentinel is not None:
            busy = self.workers_running_jobs()
            for pid in busy:
                os.kill(pid, SHUTDOWN_SIGNAL)
            if busy:
                logger.info("asked %d busy worker(s) to hand their jobs back", len(busy))
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

    def workers_running_jobs(self) -> list[int]:
        names = {worker_name(pid): pid for pid in self.worker_pids()}
        running = VideoGenerationJob.objects.filter(status=Status.RUNNING, worker__in=list(names))
        return [names[name] for name in running.values_list("worker", flat=True)]

    def stop_stragglers(self, pids: list[int]) -> None:
        from jobs.recovery import job_hand_back

        for pid in pids:
            name = worker_name(pid)
            job = VideoGenerationJob.objects.filter(status=Status.RUNNING, worker=name).first()
            if job is None:
                continue
            logger.warning("worker %s did not hand job %s back in time: killing it", name, job.id)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            job_hand_back(job)


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
