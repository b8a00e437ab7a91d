"""The interface server's seam: ServerConfig's checks, and StreamRunner driving an app through a
synchronous Stream (waiting on wake-ups for receive and for a blocked send)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from towpath.interface.config import ServerConfig, ServerConfigError
from towpath.interface.protocol.base import Message, Stream
from towpath.interface.runner import StreamRunner


def test_config_rejects_bad_values_naming_the_setting() -> None:
    with pytest.raises(ServerConfigError, match="port"):
        ServerConfig(port=70000)
    with pytest.raises(ServerConfigError, match="keep_alive_timeout_seconds"):
        ServerConfig(keep_alive_timeout_seconds=0)
    with pytest.raises(ServerConfigError, match="--ssl-keyfile"):
        ServerConfig(ssl_certfile="cert.pem")
    with pytest.raises(ServerConfigError, match="root_path"):
        ServerConfig(root_path="app/")
    with pytest.raises(ServerConfigError, match="did you mean 'keep_alive_timeout_seconds'"):
        ServerConfig().replace(keep_alive_timeout_secs=3)
    assert ServerConfig().replace(port=0).port == 0


class _Stream(Stream):
    """A stream fed by the test: messages to receive, a flag that blocks sends."""

    def __init__(self) -> None:
        self.scope: dict[str, Any] = {"type": "http", "path": "/"}
        self.inbox: list[Message] = []
        self.sent: list[Message] = []
        self.finished: list[BaseException | None] = []

    def receive(self) -> Message | None:
        return self.inbox.pop(0) if self.inbox else None

    def send(self, message: Message) -> None:
        self.sent.append(message)

    def app_finished(self, error: BaseException | None) -> None:
        self.finished.append(error)


async def test_runner_waits_for_wake_on_receive_and_on_a_blocked_send() -> None:
    stream = _Stream()
    received: list[Message] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        received.append(await receive())
        await send({"type": "one"})
        await send({"type": "two"})

    runner = StreamRunner(app, stream)
    task = runner.start()
    await asyncio.sleep(0)
    assert not received  # nothing to receive yet: waiting
    stream.inbox.append({"type": "http.request"})
    stream.blocked = True  # the first send will have to wait
    runner.wake()
    for _ in range(10):
        await asyncio.sleep(0)
    assert received == [{"type": "http.request"}]
    assert stream.sent == [{"type": "one"}]  # accepted, but send() has not returned
    stream.blocked = False
    runner.wake()
    await task
    assert stream.sent == [{"type": "one"}, {"type": "two"}]
    assert stream.finished == [None]


async def test_runner_reports_an_app_exception_to_the_stream() -> None:
    stream = _Stream()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("boom")

    await StreamRunner(app, stream).start()
    assert len(stream.finished) == 1
    assert isinstance(stream.finished[0], ValueError)
