"""``towpath.consumers.OriginValidator`` (Channels' ``OriginValidator``) and the patterns of
``towpath.origins`` it shares with ``--ws-allowed-origins``: a consumer wrapped in it, routed by
a ``Router`` and served in-process, takes the listed origins and refuses others with HTTP 403,
with the real ``websockets`` client."""

from __future__ import annotations

from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from towpath.consumers import AsyncWebsocketConsumer, OriginValidator
from towpath.origins import OriginPatterns
from towpath.routing import Router, route
from towpath.testing.server import running_server


class Echo(AsyncWebsocketConsumer):
    channel_layer_alias = None

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=text_data)


def router(**kwargs: Any) -> Router:
    allowed = ["https://chat.example.com", ".example.org", "localhost:8000"]
    return Router([route("websocket.connect", OriginValidator(Echo, allowed, **kwargs))])


@pytest.mark.parametrize(
    ("origin", "accepted"),
    [
        ("https://chat.example.com", True),
        ("https://chat.example.com:443", True),
        ("http://chat.example.com", False),
        ("https://evil.example", False),
        ("http://www.example.org", True),
        ("https://example.org", True),
        ("https://notexample.org", False),
        ("http://localhost:8000", True),
        ("http://localhost:8001", False),
        ("null", False),
        (None, False),  # no Origin: refused unless '*' or allow_missing, as in Channels
    ],
)
async def test_origin_validator_in_process(origin: str | None, accepted: bool) -> None:
    async with running_server(router()) as server:
        if accepted:
            async with connect(server.ws_url + "/", origin=origin) as ws:  # type: ignore[arg-type]
                await ws.send("hi")
                assert await ws.recv() == "hi"
        else:
            with pytest.raises(InvalidStatus) as info:
                async with connect(server.ws_url + "/", origin=origin):  # type: ignore[arg-type]
                    pass
            assert info.value.response.status_code == 403


async def test_allow_missing_lets_clients_without_origin_in() -> None:
    async with running_server(router(allow_missing=True)) as server:
        async with connect(server.ws_url + "/") as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
        with pytest.raises(InvalidStatus):
            async with connect(server.ws_url + "/", origin="https://evil.example"):  # type: ignore[arg-type]
                pass


async def test_http_passes_through() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    validator = OriginValidator(app, ["https://a.example"])
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    await validator({"type": "http", "headers": [(b"origin", b"https://evil")]}, receive, send)
    assert seen == ["http"] and sent[0]["status"] == 204


def test_bad_patterns_are_errors_naming_them() -> None:
    with pytest.raises(ValueError, match="'https://a.example/path' is not an origin pattern"):
        OriginValidator(Echo, ["https://a.example/path"])
    with pytest.raises(TypeError, match="a list of patterns"):
        OriginValidator(Echo, "https://a.example")


def test_patterns() -> None:
    patterns = OriginPatterns(["https://a.example", "b.example", ".c.example", "null"])
    allows = patterns.allows
    assert allows("https://a.example", allow_missing=False)
    assert allows("HTTPS://A.EXAMPLE:443", allow_missing=False)
    assert not allows("https://a.example:8443", allow_missing=False)
    assert allows("http://b.example:1234", allow_missing=False)  # no scheme, no port: any
    assert allows("https://x.y.c.example", allow_missing=False)
    assert allows("null", allow_missing=False)
    assert not allows("https://a.example.evil", allow_missing=False)
    assert not allows("not an origin", allow_missing=False)
    assert allows(None, allow_missing=True) and not allows(None, allow_missing=False)
    assert OriginPatterns(["*"]).allows(None, allow_missing=False)
