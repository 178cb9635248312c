"""The one way tests wait: for a condition, with a deadline, never a bare sleep to synchronise.

``wait_for`` blocks the calling thread (daemon subprocesses, threads, rings across processes);
``wait_for_async`` yields to the running event loop between looks (engines and servers tested
in-process). Both return the condition's first truthy value and fail with what was awaited.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


def wait_for(
    condition: Callable[[], Any], timeout_s: float = 5.0, what: str = "the condition",
    interval_s: float = 0.01,
) -> Any:  # fmt: skip
    """Poll ``condition`` until it returns a truthy value or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


async def wait_for_async(
    condition: Callable[[], Any], timeout_s: float = 5.0, what: str = "the condition",
    interval_s: float = 0.001,
) -> Any:  # fmt: skip
    """As ``wait_for``, yielding to the event loop between looks."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(interval_s)
