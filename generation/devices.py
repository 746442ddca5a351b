"""
Which devices a qcluster serves, and which one each worker process owns.

Plain Python, no Django and no torch: settings call `default_devices()` in
the qcluster parent, which must never initialise CUDA (its workers are forked
from it, and CUDA cannot be re-initialised in a fork), and each worker calls
`claim_slot()` and `bind_device()` as it starts, before anything imports torch.
"""

import errno
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_DEVICE = re.compile(r"^(cpu|mps|cuda:\d+)$")


class DeviceError(ValueError):
    """A device list that cannot be served."""


def visible_gpus(environ: dict[str, str] | None = None) -> list[str] | None:
    """
    The GPUs CUDA_VISIBLE_DEVICES lets this host's processes see, as the
    entries it lists (indexes or GPU-UUIDs); None when it is not set.
    """
    environ = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" not in environ:
        return None
    entries = [entry.strip() for entry in environ["CUDA_VISIBLE_DEVICES"].split(",") if entry.strip()]
    # CUDA stops at the first invalid entry; "-1" is the usual way to hide every GPU.
    visible = []
    for entry in entries:
        if entry.startswith("-"):
            break
        visible.append(entry)
    return visible


def gpu_count() -> int:
    """
    How many GPUs this host shows, without initialising CUDA (torch's
    device_count would load the CUDA runtime into the qcluster parent).
    """
    visible = visible_gpus()
    if visible is not None:
        return len(visible)
    # The NVIDIA driver lists one directory per GPU here; inside a container
    # the NVIDIA runtime shows only the GPUs given to it.
    proc = Path("/proc/driver/nvidia/gpus")
    if proc.is_dir():
        return len(list(proc.iterdir()))
    if shutil.which("nvidia-smi"):
        try:
            listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            return 0
        return sum(1 for line in listing.splitlines() if line.startswith("GPU "))
    return 0


def default_devices() -> list[str]:
    """Every GPU the host shows, one device each; else the CPU."""
    count = gpu_count()
    return [f"cuda:{index}" for index in range(count)] or ["cpu"]


def normalise_device(device: str) -> str:
    device = device.strip().lower()
    if device == "cuda":
        device = "cuda:0"
    if not _DEVICE.match(device):
        raise DeviceError(f"{device!r} is not a device: use cpu, mps or cuda:N")
    return device


def slot_devices(devices: list[str], workers: int) -> list[str]:
    """
    The device of each worker slot. Slot i gets devices[i]. More workers than
    devices is only allowed on the CPU: a GPU is shared only when the
    operator lists it twice.
    """
    devices = [normalise_device(device) for device in devices]
    if not devices:
        raise DeviceError("no devices listed")
    if workers <= len(devices):
        return devices[:workers]
    if set(devices) == {"cpu"}:
        return ["cpu"] * workers
    raise DeviceError(
        f"{workers} workers but only {len(devices)} devices ({','.join(devices)}): each worker owns one "
        "device; list a GPU twice to share it"
    )


@dataclass(frozen=True)
class Binding:
    """What a worker sets in its environment, and the device name it then uses."""

    cuda_visible_devices: str | None
    engine_device: str


def binding_for(device: str, visible: list[str] | None) -> Binding:
    """
    A worker owns its GPU through CUDA_VISIBLE_DEVICES, set to that one GPU
    before CUDA initialises in the process: the driver then shows it no other
    GPU, so nothing in the process (a stray torch.cuda call, a library that
    picks "cuda" or device 0 on its own, NCCL) can allocate on another
    worker's GPU. torch.cuda.set_device would only change the default device
    and leave every GPU reachable. Inside, the one GPU is cuda:0. A CPU worker
    sees no GPU at all.
    """
    if device.startswith("cuda:"):
        index = int(device.partition(":")[2])
        if visible is not None:
            if index >= len(visible):
                raise DeviceError(f"{device} is not among CUDA_VISIBLE_DEVICES={','.join(visible)}")
            return Binding(visible[index], "cuda:0")
        return Binding(str(index), "cuda:0")
    if device == "cpu":
        return Binding("", "cpu")
    return Binding(None, device)


def bind_device(device: str) -> str:
    """In a worker process, before torch initialises CUDA: own `device`. Returns the name to use inside."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise RuntimeError("CUDA is already initialised in this process: too late to bind a device")
    binding = binding_for(device, visible_gpus())
    if binding.cuda_visible_devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = binding.cuda_visible_devices
    return binding.engine_device


def slot_directory(cluster_pid: int) -> Path:
    """Where the workers of one cluster (its sentinel's pid) hold their slot locks."""
    return Path(tempfile.gettempdir()) / f"videogen-slots-{os.getuid()}" / str(cluster_pid)


class SlotClaim:
    """
    Worker slot i, held by this process for its lifetime: an fcntl lock on
    one file per slot. The kernel releases a lock when its process dies, so
    a worker killed by anything (SIGKILL, the OOM killer) frees its slot for
    the replacement django-q2 spawns, and a worker still dying (stuck in the
    GPU driver) keeps it until it is really gone. POSIX locks are not
    inherited by forked children, so nothing this worker starts holds it.
    """

    def __init__(self, slot: int, handle):
        self.slot = slot
        self._handle = handle

    def release(self) -> None:
        self._handle.close()


def try_claim_slot(directory: Path, slots: int) -> SlotClaim | None:
    directory.mkdir(parents=True, exist_ok=True)
    for slot in range(slots):
        handle = open(directory / f"slot-{slot}.lock", "a+")
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                continue
            raise
        # The holder's pid, for counting live workers (slot_holders()).
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        return SlotClaim(slot, handle)
    return None


def slot_holders(directory: Path) -> set[int]:
    """The pids last written to a cluster's slot files: its workers, and perhaps dead ones (check them)."""
    return set(held_slots(directory).values())


def held_slots(directory: Path) -> dict[int, int]:
    """Slot to the pid last written to its file (perhaps a dead one's: check it)."""
    held = {}
    for path in directory.glob("slot-*.lock"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        slot = path.name.removeprefix("slot-").removesuffix(".lock")
        if text.isdigit() and slot.isdigit():
            held[int(slot)] = int(text)
    return held


def claim_slot(
    directory: Path, slots: int, *, poll: float = 0.2, on_wait: Callable[[float], None] | None = None
) -> SlotClaim:
    """
    The lowest free slot, waiting while every slot is held (a replacement
    spawned before the worker it replaces has fully died).
    """
    started = time.monotonic()
    while True:
        claim = try_claim_slot(directory, slots)
        if claim is not None:
            return claim
        if on_wait is not None:
            on_wait(time.monotonic() - started)
        time.sleep(poll)
