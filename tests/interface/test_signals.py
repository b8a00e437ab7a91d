"""One signal harness (``towpath.signals``) for serve, runworker and runserver."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import pytest

from towpath.signals import graceful_then_forced, handle_signals


def test_the_first_signal_is_graceful_each_next_one_forces(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []
    logger = logging.getLogger("towpath.test")
    on_signal = graceful_then_forced(
        lambda: calls.append("graceful"), lambda: calls.append("force"), logger=logger
    )
    with caplog.at_level(logging.INFO, "towpath.test"):
        on_signal()
        on_signal()
        on_signal()
    assert calls == ["graceful", "force", "force"]
    assert [r.getMessage() for r in caplog.records] == [
        "shutting down (signal again to force)",
        "second signal: shutting down now",
        "second signal: shutting down now",
    ]


def test_forced_asks_the_caller_whether_it_is_already_stopping() -> None:
    calls: list[str] = []
    stopping = [True]  # stopped by something else: the first signal already forces
    on_signal = graceful_then_forced(
        lambda: calls.append("graceful"),
        lambda: calls.append("force"),
        logger=logging.getLogger("towpath.test"),
        forced=lambda: stopping[0],
    )
    on_signal()
    stopping[0] = False
    on_signal()
    assert calls == ["force", "graceful"]


async def test_handlers_are_installed_for_the_block_only() -> None:
    got: list[str] = []
    stats = asyncio.Event()
    stop = asyncio.Event()

    def on_stats() -> None:
        got.append("stats")
        stats.set()

    def on_stop() -> None:
        got.append("stop")
        stop.set()

    with handle_signals(on_stop, on_stats=on_stats):
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.wait_for(stats.wait(), 5)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stop.wait(), 5)
    assert got == ["stats", "stop"]
    loop = asyncio.get_running_loop()
    assert not loop.remove_signal_handler(signal.SIGTERM)  # none left installed
    assert not loop.remove_signal_handler(signal.SIGUSR1)
