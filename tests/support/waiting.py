"""The one bound on every wait of the tests, and the one wait for a condition.

``WAIT`` bounds what must happen (a process's start, a reply, a log line); it is never a
synchronisation: nothing sleeps for it. ``until`` waits for state that has no event to wait on
(another task's or process's counters, a file), checking it every few milliseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["WAIT", "until"]

#: seconds: a bound on every wait, never a synchronisation
WAIT = 15.0


async def until(
    condition: Callable[[], object | Awaitable[object]],
    what: str = "the condition",
    *,
    wait: float = WAIT,
    every: float = 0.005,
) -> None:
    """Return once ``condition()`` (sync or async) is true, letting the event loop run between
    checks (every ``every`` seconds); AssertionError naming ``what`` after ``wait`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        result = condition()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {wait} s waiting for {what}")
        await asyncio.sleep(every)
