"""``examples/notifications`` end to end over a real Redis: ``towpath serve`` and ``towpath
runworker`` as the README runs them, httpx as the client, and the publish script as a real
process. The worker is stopped before each publish, so the answers can only come from the
publisher's ``group_send``."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support.commands import runworker, stop
from tests.support.waiting import WAIT
from towpath.testing.processes import ServeProcess, towpath_serve
from towpath.testing.services import RedisServer

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = "examples/notifications/settings.py"

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(60)]

Stack = tuple[ServeProcess, ServeProcess]


@pytest.fixture
async def stack(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    """The interface server and one worker, both on the example's settings."""
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    async with (
        towpath_serve("--settings", SETTINGS, "--port", "0", cwd=ROOT) as served,
        runworker("--settings", SETTINGS, tag="A", cwd=ROOT) as worker,
    ):
        yield served, worker


async def publish_script(topic: str, text: str) -> str:
    """Run ``python -m examples.notifications.publish``; the id it printed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "examples.notifications.publish",
        topic,
        text,
        cwd=ROOT,
        env=dict(os.environ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(WAIT):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    words = out.decode().split()
    assert words[0] == "published" and words[2:] == ["to", topic], out
    return words[1]


async def test_one_publish_answers_every_long_poll(stack: Stack) -> None:
    served, worker = stack
    async with httpx.AsyncClient(base_url=served.url, timeout=WAIT) as http:
        polls = [asyncio.create_task(http.get(f"/poll/news?n={n}")) for n in range(3)]
        other = asyncio.create_task(http.get("/poll/sports?n=9"))
        async with asyncio.timeout(WAIT):
            for n in range(3):
                await worker.wait_for_stderr(f"parked /poll/news?n={n} in poll.news")
            await worker.wait_for_stderr("parked /poll/sports?n=9 in poll.sports")
        # Every request is parked; no worker is left to answer anything.
        assert await stop(worker) == 0, worker.output()
        assert not any(task.done() for task in [*polls, other])

        event_id = await publish_script("news", "locks opened at 9")
        async with asyncio.timeout(WAIT):
            responses = await asyncio.gather(*polls)
        for response in responses:
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            assert response.json() == {"id": event_id, "topic": "news", "text": "locks opened at 9"}
        assert not other.done()  # another topic's poll still waits...

        event_id = await publish_script("sports", "regatta at noon")
        async with asyncio.timeout(WAIT):
            response = await other  # ...for its own topic's publish
        assert response.json() == {"id": event_id, "topic": "sports", "text": "regatta at noon"}
    assert await stop(served) == 0


async def test_a_stream_gets_every_event_in_order(stack: Stack) -> None:
    served, worker = stack
    async with httpx.AsyncClient(base_url=served.url, timeout=WAIT) as http:
        page = await http.get("/")
        assert page.status_code == 200 and "EventSource" in page.text
        assert (await http.get("/poll/no%20spaces")).status_code == 404
        assert (await http.post("/publish/news", content=b"  ")).status_code == 400
        async with http.stream("GET", "/events/news") as response, asyncio.timeout(WAIT):
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream"
            lines = response.aiter_lines()
            while not (await anext(lines)).startswith(": subscribed to news"):
                pass  # the comment comes once the stream is in the topic's group
            sent = []
            for text in ["one", "two", "three"]:  # published by the worker, on POST
                answer = await http.post("/publish/news", content=text.encode())
                assert answer.status_code == 200
                sent.append(answer.json()["id"])
            assert await stop(worker) == 0, worker.output()
            sent.append(await publish_script("news", "four"))  # and with no worker at all

            events: list[tuple[str, dict[str, str]]] = []
            event_id = None
            while len(events) < 4:
                line = await anext(lines)
                if line.startswith("id: "):
                    event_id = line.removeprefix("id: ")
                elif line.startswith("data: "):
                    assert event_id is not None
                    events.append((event_id, json.loads(line.removeprefix("data: "))))
        assert [data["text"] for _, data in events] == ["one", "two", "three", "four"]
        assert [event_id for event_id, _ in events] == sent
        assert all(data["id"] == event_id for event_id, data in events)
    assert await stop(served) == 0
