"""Our gunicorn worker (videogen/handoff.py's Worker) under the signals a stop sends it."""

import subprocess
import sys
import textwrap

import pytest

from django.conf import settings

# A Ctrl-C that lands while the worker's main thread is inside its thread pool's
# submit(), the moment a keep-alive connection wakes up: the lock submit() holds
# is taken again by gthread's quick stop, which then waited for the master's SIGKILL.
CTRL_C_INSIDE_SUBMIT = textwrap.dedent("""
    import logging, os, signal, sys, time
    from concurrent import futures
    from types import SimpleNamespace

    import videogen.gunicorn
    from videogen.handoff import Worker

    worker = Worker.__new__(Worker)
    worker.alive = True
    worker.pid = os.getpid()
    worker.log = logging.getLogger("gunicorn.error")
    worker.cfg = SimpleNamespace(worker_int=videogen.gunicorn.worker_int)
    worker.tpool = futures.ThreadPoolExecutor(max_workers=2)
    signal.signal(signal.SIGINT, worker.handle_quit)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO)

    with worker.tpool._shutdown_lock:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(30)
    print("the signal was not handled")
""")


@pytest.mark.slow
def test_a_ctrl_c_inside_the_thread_pools_submit_exits_the_worker_at_once():
    finished = subprocess.run([sys.executable, "-c", CTRL_C_INSIDE_SUBMIT], cwd=settings.BASE_DIR,
                              capture_output=True, text=True, timeout=20)

    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "Worker exiting" in finished.stdout
