"""
What the tests and bench/ share for the processes they start: a free port,
the processes below one, and one way to wait for something another process
(or thread) does.
"""

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# Often enough that a test notices within a blink, rarely enough that polling
# the database never competes for the 2 cores with the worker it waits for.
POLL_INTERVAL = 0.1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """Every process below pid (children, their children...), from /proc."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(child) for child in (task / "children").read_text().split()]
    return children + [grandchild for child in children for grandchild in descendants(child)]


def wait_until(
    condition: Callable[[], T],
    what: str,
    *,
    timeout: float,
    gone: Callable[[], bool] = lambda: False,
    details: Callable[[], str] = lambda: "",
    interval: float = POLL_INTERVAL,
) -> T:
    """
    Call condition() until it returns something true, and return that. Fail,
    naming `what` and adding details() (a log's tail), after `timeout` seconds
    or as soon as gone() is true (the process that should do it has exited).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if gone():
            raise AssertionError(f"exited while waiting for {what}:\n{details()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}:\n{details()}")
        time.sleep(interval)
