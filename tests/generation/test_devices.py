"""
Device slots: which devices a cluster serves, and how its worker processes
claim one each, including a replacement for a killed worker. The claims are
made by real processes, as django-q2's workers make them.
"""

import signal
import subprocess
import sys
import textwrap

import pytest
from django.conf import settings

from generation.devices import (
    DeviceError,
    binding_for,
    default_devices,
    gpu_count,
    slot_devices,
    try_claim_slot,
    visible_gpus,
)


def test_every_gpu_in_cuda_visible_devices_is_a_device(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,GPU-1f2e,6")

    assert gpu_count() == 3
    assert default_devices() == ["cuda:0", "cuda:1", "cuda:2"]


def test_a_host_that_hides_its_gpus_serves_the_cpu(monkeypatch):
    for hidden in ("", "-1", "-1,0"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert default_devices() == ["cpu"], hidden


@pytest.mark.slow
def test_counting_gpus_never_loads_torch():
    # The qcluster parent reads the settings: it must not load the CUDA runtime.
    code = "import sys; from generation.devices import default_devices; default_devices(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=settings.BASE_DIR, capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


def test_each_worker_slot_gets_its_own_device():
    assert slot_devices(["cuda:0", "cuda:1", "cuda"], 2) == ["cuda:0", "cuda:1"]
    assert slot_devices(["cuda:0", "cuda:0"], 2) == ["cuda:0", "cuda:0"]


def test_cpu_workers_may_outnumber_the_devices():
    assert slot_devices(["cpu"], 3) == ["cpu", "cpu", "cpu"]


def test_two_workers_never_share_a_gpu_unless_it_is_listed_twice():
    with pytest.raises(DeviceError, match="list a GPU twice"):
        slot_devices(["cuda:0"], 2)


def test_a_device_that_is_not_one_is_refused():
    for bad in ("gpu", "cuda:x", "cuda:-1", ""):
        with pytest.raises(DeviceError):
            slot_devices([bad], 1)


def test_a_gpu_worker_sees_only_its_own_gpu():
    binding = binding_for("cuda:1", None)
    assert (binding.cuda_visible_devices, binding.engine_device) == ("1", "cuda:0")
    # Indexes count within what the host was given, as CUDA counts them.
    assert binding_for("cuda:1", ["4", "GPU-1f2e"]).cuda_visible_devices == "GPU-1f2e"
    with pytest.raises(DeviceError, match="not among CUDA_VISIBLE_DEVICES"):
        binding_for("cuda:2", ["4", "5"])


def test_a_cpu_worker_sees_no_gpu():
    binding = binding_for("cpu", ["0", "1"])
    assert (binding.cuda_visible_devices, binding.engine_device) == ("", "cpu")


def test_visible_gpus_is_none_when_the_host_sets_nothing(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpus() is None


@pytest.mark.slow
def test_binding_sets_the_worker_process_environment_before_torch_loads():
    code = textwrap.dedent("""
        import os
        from generation.devices import bind_device
        print(bind_device("cuda:1"), os.environ["CUDA_VISIBLE_DEVICES"])
    """)
    env = {"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": "2,3"}
    result = subprocess.run([sys.executable, "-c", code], cwd=settings.BASE_DIR, env=env, capture_output=True,
                            text=True, check=True)
    assert result.stdout.split() == ["cuda:0", "3"]


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from generation.devices import claim_slot
    claim = claim_slot(Path(sys.argv[1]), int(sys.argv[2]), poll=0.05)
    print(claim.slot, flush=True)
    time.sleep(600)
""")


class Holders:
    """Worker-like processes, each holding the slot it claimed until it dies."""

    def __init__(self, directory, slots: int):
        self.directory = directory
        self.slots = slots
        self.processes: list[subprocess.Popen] = []

    def start(self) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", HOLDER, str(self.directory), str(self.slots)],
                                   cwd=settings.BASE_DIR, stdout=subprocess.PIPE, text=True)
        self.processes.append(process)
        return process

    @staticmethod
    def slot_of(process: subprocess.Popen) -> int:
        return int(process.stdout.readline())

    def stop(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait()


@pytest.fixture
def holders(tmp_path):
    started = Holders(tmp_path / "slots", 2)
    yield started
    started.stop()


@pytest.mark.slow
def test_workers_take_the_lowest_free_slots(holders):
    assert [holders.slot_of(holders.start()), holders.slot_of(holders.start())] == [0, 1]
    # Every slot is held: nothing is free for a third.
    assert try_claim_slot(holders.directory, 2) is None


@pytest.mark.slow
def test_a_replacement_for_a_killed_worker_takes_its_slot_and_no_other(holders):
    first, second = holders.start(), holders.start()
    slots = {holders.slot_of(first): first, holders.slot_of(second): second}

    slots[0].send_signal(signal.SIGKILL)
    slots[0].wait()
    replacement = holders.start()

    assert holders.slot_of(replacement) == 0
    assert slots[1].poll() is None
    assert try_claim_slot(holders.directory, 2) is None


@pytest.mark.slow
def test_a_replacement_waits_while_the_worker_it_replaces_is_still_alive(holders):
    first, second = holders.start(), holders.start()
    slots = {holders.slot_of(first): first, holders.slot_of(second): second}
    # Spawned before the one it replaces is gone (django-q2 does this on a timeout).
    replacement = holders.start()
    with pytest.raises(subprocess.TimeoutExpired):
        replacement.wait(timeout=1)

    slots[1].send_signal(signal.SIGKILL)

    assert holders.slot_of(replacement) == 1
