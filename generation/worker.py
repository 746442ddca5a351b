"""
The life of a django-q2 worker process around its jobs: its device slot, a
graceful stop, and recovery of lost jobs whenever a worker (re)starts.
"""

import logging
import os
import signal
from dataclasses import dataclass

from django.conf import settings
from django.dispatch import receiver
from django_q.signals import post_spawn

from generation.devices import SlotClaim, bind_device, claim_slot, slot_directory
from jobs.services.recovery import reap_lost_jobs

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Slot:
    index: int | None
    # As the operator listed it (cuda:3), and as this process names it once bound (cuda:0).
    device: str
    engine_device: str


_slot: Slot | None = None
_claim: SlotClaim | None = None


def current_slot() -> Slot:
    """This worker's slot; outside a qcluster worker (a shell, a test), slot 0's device, unbound."""
    if _slot is not None:
        return _slot
    device = settings.VIDEOGEN_SLOT_DEVICES[0]
    return Slot(None, device, device)


def take_slot(cluster_pid: int) -> Slot:
    """
    In a new worker process, before anything imports torch: claim the lowest
    free slot of this cluster and bind the process to that slot's device.
    """
    global _slot, _claim

    def waiting(seconds: float) -> None:
        if int(seconds * 5) % 50 == 0:
            logger.warning("worker %d: every slot is held; waiting for a dying worker to release one", os.getpid())

    _claim = claim_slot(slot_directory(cluster_pid), settings.VIDEOGEN_WORKERS, on_wait=waiting)
    device = settings.VIDEOGEN_SLOT_DEVICES[_claim.slot]
    _slot = Slot(_claim.slot, device, bind_device(device))
    return _slot

def worker_queue() -> str | None:
    """
    The queue this process's cluster serves: None for the default one, else
    the VIDEOGEN_MODEL_QUEUES queue it was started on (Q_CLUSTER_NAME).
    """
    from django_q.conf import Conf

    return None if Conf.CLUSTER_NAME == Conf.PREFIX else Conf.CLUSTER_NAME


def limit_task_time(seconds: int) -> None:
    """
    Hold the running task to a job's own timeout. django-q2 armed SIGALRM for
    the wake-up's, the longest of its queue's models (the task did not know
    which job it would claim); a model that allows less gets less. Outside a
    django-q2 task (no handler installed, no alarm armed) it does nothing.
    """
    if signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.SIG_IGN, None):
        return
    remaining = signal.alarm(0)
    if remaining:
        signal.alarm(min(seconds, remaining))


# Sent by our qcluster to the workers that are running a job when the cluster
# is asked to stop (see generation/management/commands/qcluster.py).
SHUTDOWN_SIGNAL = signal.SIGUSR1

_shutdown_requested = False


def shutdown_requested() -> bool:
    return _shutdown_requested


def _request_shutdown(signum, frame) -> None:
    global _shutdown_requested
    _shutdown_requested = True


def install_shutdown_handler() -> None:
    """
    In a worker process: on SHUTDOWN_SIGNAL, hand the running job back at its
    next step. SIGTERM does the same, because systemd (KillMode=control-group)
    sends it to every process of the unit at once: dying on it would drop the
    job instead of handing it back. The qcluster parent still bounds the stop
    (VIDEOGEN_SHUTDOWN_TIMEOUT, then SIGKILL).
    """
    signal.signal(SHUTDOWN_SIGNAL, _request_shutdown)
    signal.signal(signal.SIGTERM, _request_shutdown)


@receiver(post_spawn)
def start_worker(sender, proc_name, **kwargs) -> None:
    install_shutdown_handler()
    from django_q.conf import Conf

    if Conf.CLUSTER_NAME == settings.VIDEOGEN_WEBHOOK_QUEUE:
        # A webhook worker only sends HTTP requests: no device slot, no jobs to recover.
        return
    # The worker's parent is the cluster's sentinel: slots are per cluster.
    slot = take_slot(os.getppid())
    logger.info("%s (pid %d) is worker slot %d on %s", proc_name, os.getpid(), slot.index, slot.device)
    # A worker that starts may be replacing one that died mid-job (killed by
    # the OOM killer, say): its job is found here at once instead of at the
    # next reap.
    from django_q.utils import close_old_django_connections

    close_old_django_connections()
    try:
        counts = reap_lost_jobs()
    except Exception:
        logger.exception("recovering lost jobs failed in %s", proc_name)
        return
    if any(counts.values()):
        logger.info("%s recovered lost jobs: %s", proc_name, counts)
