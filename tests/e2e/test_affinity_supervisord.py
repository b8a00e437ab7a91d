"""Issue 6's third acceptance run: the 100-client chat of ``test_affinity_chat.py`` under the
supervisord stack of ``deploy/`` (``towpath deploy supervisord``: two interface servers on
supervisord's shared socket, three workers), every worker program restarted twice with
``supervisorctl restart``, one at a time: no client is disconnected and no message is lost,
repeated or reordered."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.chat import (
    HEARTBEAT_INTERVAL,
    HEARTBEAT_TIMEOUT,
    PERIOD,
    chatting,
    check_everything_heard_in_order,
    last_words_heard,
)
from tests.support.commands import ENV, write_settings
from tests.support.waiting import WAIT
from towpath.testing.supervisor import supervisor_stack

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
def settings(tmp_path: Path, redis_server: Any) -> Path:
    return write_settings(
        tmp_path, "towpath.layers.redis.RedisChannelLayer", {"hosts": [redis_server.url]}
    )


async def test_supervisorctl_restarts_of_every_worker_lose_nothing(
    settings: Path, tmp_path: Path
) -> None:
    async with supervisor_stack(
        tmp_path,
        settings,
        workers=3,
        servers=2,
        env=ENV,
        serve_args=("--heartbeat-timeout", str(HEARTBEAT_TIMEOUT)),
        worker_args=("--heartbeat-interval", str(HEARTBEAT_INTERVAL)),
        graceful_timeout=20,
    ) as stack:
        async with chatting(stack.ws_url + "/chat/") as (talkers, until):
            await asyncio.sleep(PERIOD)  # everyone has talked once before the first restart
            span = [time.monotonic()]
            for _ in range(2):
                for name in stack.workers:
                    async with asyncio.timeout(4 * WAIT):
                        await stack.restart(name)
            span.append(time.monotonic())
            await asyncio.sleep(PERIOD)
            until.set()
            assert_none_closed(talkers, stack)
            async with asyncio.timeout(WAIT):
                await last_words_heard(talkers)
            assert_none_closed(talkers, stack)
        check_everything_heard_in_order(talkers, span)
        for name in stack.servers:
            assert "did not release" not in stack.log(name)


def assert_none_closed(talkers: list[Any], stack: Any) -> None:
    """No client was closed; else which, with what, and every program's log."""
    closed = {
        talker.index: (talker.socket.close_code, talker.socket.close_reason)
        for talker in talkers
        if talker.socket.close_code is not None
    }
    if closed:
        logs = "\n".join(
            f"--- {name} ---\n{stack.log(name)[-4000:]}"
            for name in [*stack.servers, *stack.workers]
        )
        pytest.fail(f"{len(closed)} client(s) closed: {closed}\n{logs}")
