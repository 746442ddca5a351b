"""
The life of a django-q2 worker process around its jobs: a graceful stop, and
recovery of lost jobs whenever a worker (re)starts.
"""

import logging
import signal

from django.dispatch import receiver
from django_q.signals import post_spawn

logger = logging.getLogger(__name__)

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
    """In a worker process: on SHUTDOWN_SIGNAL, hand the running job back at its next step."""
    signal.signal(SHUTDOWN_SIGNAL, _request_shutdown)


@receiver(post_spawn)
def recover_lost_jobs_on_start(sender, proc_name, **kwargs) -> None:
    # A worker that starts may be replacing one that died mid-job (killed by
    # the OOM killer, say): its job is found here at once instead of at the
    # next scheduled reap.
    install_shutdown_handler()
    from django_q.utils import close_old_django_connections

    from jobs.recovery import reap_lost_jobs

    close_old_django_connections()
    try:
        counts = reap_lost_jobs()
    except Exception:
        logger.exception("recovering lost jobs failed in %s", proc_name)
        return
    if any(counts.values()):
        logger.info("%s recovered lost jobs: %s", proc_name, counts)
