"""towpath.routing: filters, named groups, include() prefix stripping, first match wins, the
fallbacks, the channel set, bad definitions, and a Router served in-process."""

from __future__ import annotations

import re
import sys
import types
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from towpath.consumers import AsyncHttpConsumer, AsyncWebsocketConsumer, reply, reply_events
from towpath.routing import (
    Match,
    Router,
    asgi_app,
    call_message_consumer,
    include,
    message_consumer,
    not_found,
    reject_websocket,
    route,
)
from towpath.testing.server import running_server


async def app_a(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"a:" + scope["path"].encode()})


async def app_b(scope: Any, receive: Any, send: Any) -> None:
    kwargs = scope["url_route"]["kwargs"]
    body = f"b:{scope['root_path']}|{scope['path']}|{sorted(kwargs.items())}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def job(message: dict[str, Any], **kwargs: Any) -> None:
    message.setdefault("seen", []).append(kwargs)


def sync_job(message: dict[str, Any]) -> None:
    message["sync"] = True


def http(path: str, root_path: str = "", **extra: Any) -> dict[str, Any]:
    scope = {"type": "http", "path": path, "root_path": root_path, "method": "GET", **extra}
    return {"type": "http.request", "reply_channel": "r!x", "scope": scope, "body": b""}


class Room(AsyncWebsocketConsumer):
    pass


class Page(AsyncHttpConsumer):
    async def handle(self, body: bytes) -> None:
        await self.send_response(200, self.scope["url_route"]["kwargs"]["slug"].encode())


# -- matching -----------------------------------------------------------------------------------


def test_filters_named_groups_and_scope() -> None:
    router = Router([route("http.request", app_b, path=r"^/users/(?P<id>\d+)/$", method="GET")])
    match = router.match("http.request", http("/users/42/"))
    assert match is not None
    assert match.kind == "asgi"
    assert match.target is app_b
    assert match.kwargs == {"id": "42"}
    assert match.scope is not None
    assert match.scope["url_route"] == {"args": (), "kwargs": {"id": "42"}}
    assert match.scope["path"] == "/users/42/"
    assert not match.fallback
    # a filter that fails (method) or a key that is absent never matches
    assert router.match("http.request", http("/users/42/", method="POST")).fallback  # type: ignore[union-attr]
    assert router.match("http.request", http("/users/x/")).fallback  # type: ignore[union-attr]


def test_path_is_matched_relative_to_root_path() -> None:
    router = Router([route("http.request", app_b, path=r"^/x$")])
    match = router.match("http.request", http("/api/x", root_path="/api"))
    assert match is not None
    assert not match.fallback


def test_include_strips_the_prefix_into_root_path() -> None:
    inner = [route("http.request", app_b, path=r"^/(?P<room>[^/]+)/$")]
    router = Router([include(inner, path=r"^/chat/(?P<site>\w+)")])
    match = router.match("http.request", http("/mount/chat/main/lobby/", root_path="/mount"))
    assert match is not None
    assert match.kwargs == {"site": "main", "room": "lobby"}
    assert match.scope is not None
    assert match.scope["root_path"] == "/mount/chat/main"
    assert match.scope["path"] == "/mount/chat/main/lobby/"  # path stays whole (ASGI today)
    assert match.scope["url_route"]["kwargs"] == {"site": "main", "room": "lobby"}
    # the inner route saw the stripped path: without the prefix it does not match
    assert router.match("http.request", http("/lobby/")).fallback  # type: ignore[union-attr]


def test_nested_includes_and_module_attr_strings() -> None:
    module = types.ModuleType("towpath_test_routes")
    module.inner = [route("http.request", app_b, path=r"^/leaf$")]  # type: ignore[attr-defined]
    module.middle = [include("towpath_test_routes:inner", path=r"^/b")]  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        router = Router([include("towpath_test_routes:middle", path=r"^/a")])
        match = router.match("http.request", http("/a/b/leaf"))
        assert match is not None and not match.fallback
        assert match.scope is not None and match.scope["root_path"] == "/a/b"
        assert Router("towpath_test_routes:inner").channels == {"http.request"}
    finally:
        del sys.modules[module.__name__]


def test_first_match_wins() -> None:
    router = Router(
        [
            route("http.request", app_a, path=r"^/same"),
            route("http.request", app_b, path=r"^/same"),
            route("http.request", app_b),
        ]
    )
    assert router.match("http.request", http("/same/x")).target is app_a  # type: ignore[union-attr]
    assert router.match("http.request", http("/other")).target is app_b  # type: ignore[union-attr]


def test_message_channels_match_message_keys() -> None:
    router = Router(
        [
            route("thumbnail", job, size=r"^(?P<w>\d+)x(?P<h>\d+)$"),
            route("thumbnail", sync_job),
        ]
    )
    match = router.match("thumbnail", {"type": "resize", "size": "640x480"})
    assert match == Match("message", job, {"w": "640", "h": "480"}, None, match.route, False)  # type: ignore[union-attr]
    fallback = router.match("thumbnail", {"type": "resize", "size": 7})
    assert fallback is not None
    assert fallback.target is sync_job
    assert fallback.sync
    assert router.match("nobody.listens", {"type": "x"}) is None


def test_fallbacks_for_unrouted_connections() -> None:
    router = Router([route("thumbnail", job)])
    http_match = router.match("http.request", http("/"))
    assert http_match is not None
    assert (http_match.kind, http_match.target, http_match.fallback) == ("asgi", not_found, True)
    assert http_match.scope is not None and http_match.scope["path"] == "/"
    ws = router.match("websocket.connect", {"type": "websocket.connect", "scope": {"path": "/"}})
    assert ws is not None and ws.target is reject_websocket and ws.fallback
    assert router.match("websocket.receive", {"type": "websocket.receive"}) is None


def test_channels_set() -> None:
    router = Router(
        [
            route("http.request", app_a, path="^/a"),
            include([route("websocket.connect", Room), route("jobs", job)], path="^/x"),
            route("thumbnail", job),
        ]
    )
    assert router.channels == frozenset({"http.request", "websocket.connect", "jobs", "thumbnail"})
    assert "thumbnail" in repr(router)


# -- targets ------------------------------------------------------------------------------------


def test_target_kinds_by_signature_and_wrappers() -> None:
    class Starlettish:
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            pass

    async def hello(message: Any, name: str) -> None:
        pass

    async def wrapper(*args: Any, **kwargs: Any) -> None:
        pass

    assert route("http.request", Starlettish()).kind == "asgi"
    assert route("http.request", hello, path=r"^/(?P<name>\w+)").kind == "message"
    assert route("http.request", job).kind == "message"
    consumer = route("websocket.connect", Room)
    assert consumer.kind == "asgi"
    assert consumer.target.consumer_class is Room  # type: ignore[attr-defined]
    assert route("http.request", asgi_app(wrapper)).kind == "asgi"
    assert route("http.request", message_consumer(wrapper)).kind == "message"
    with pytest.raises(TypeError, match="wrapper.*asgi_app"):
        route("http.request", wrapper)


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: route("bad channel!", job), "'bad channel!'"),
        (lambda: route("http.request", "not callable"), "'not callable'"),
        (lambda: route("http.request", object), "object is a class without as_asgi"),
        (lambda: route("http.request", job, path=3), "path= must be a regex.*3"),
        (lambda: route("thumbnail", app_a), "app_a is an ASGI app.*http.request"),
        (lambda: Router([route("thumbnail", job), ("http.request", job)]), "call route"),
        (lambda: Router([job]), "is not a route"),
        (lambda: Router({"http.request": job}), "dict"),
        (lambda: include(42), "not int"),
    ],
)
def test_bad_definitions_name_the_value(make: Any, fragment: str) -> None:
    with pytest.raises(TypeError, match=fragment):
        make()


def test_bad_regex_is_a_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match=re.escape("path='^/(unclosed'")):
        route("http.request", job, path=r"^/(unclosed")


async def test_consumer_class_on_a_plain_channel_dispatches_by_type() -> None:
    """Channels 4's background consumers (ChannelNameRouter): methods by message type."""
    seen: list[Any] = []

    from towpath.consumers import AsyncConsumer

    class Thumbnails(AsyncConsumer):
        channel_layer_alias = None

        async def thumbnail_make(self, message: dict[str, Any]) -> None:
            seen.append((self.scope["type"], self.scope["channel"], message["id"]))

    router = Router([route("thumbnails", Thumbnails)])
    match = router.match("thumbnails", {"type": "thumbnail.make", "id": 7})
    assert match is not None and match.kind == "message"
    await call_message_consumer(match, {"type": "thumbnail.make", "id": 7})
    await call_message_consumer(match, {"type": "thumbnail.make", "id": 8})
    assert seen == [("channel", "thumbnails", 7), ("channel", "thumbnails", 8)]


async def test_sync_message_consumer_runs_in_a_thread() -> None:
    router = Router([route("jobs", sync_job)])
    message: dict[str, Any] = {"type": "x"}
    match = router.match("jobs", message)
    assert match is not None
    await call_message_consumer(match, message)
    assert message["sync"] is True


# -- served in-process ---------------------------------------------------------------------------


async def hello(message: dict[str, Any], name: str) -> None:
    await reply(message, 200, f"hello {name} ({len(message['body'])} bytes)")


async def ws_connect(message: dict[str, Any]) -> None:
    await reply_events(message, {"type": "websocket.accept"})


async def ws_receive(message: dict[str, Any]) -> None:
    await reply_events(
        message, {"type": "websocket.send", "text": f"{message['order']}:{message['text']}"}
    )


async def test_router_serves_in_process() -> None:
    router = Router(
        [
            route("http.request", hello, path=r"^/hello/(?P<name>\w+)$"),
            include(
                [route("http.request", Page.as_asgi(), path=r"^/(?P<slug>[\w-]+)$")],
                path=r"^/pages",
            ),
            route("http.request", app_a, path=r"^/a"),
            route("websocket.connect", ws_connect, path=r"^/ws$"),
            route("websocket.receive", ws_receive),
        ]
    )
    async with running_server(router) as server, httpx.AsyncClient(base_url=server.url) as client:
        response = await client.post("/hello/ann", content=b"12345")
        assert (response.status_code, response.text) == (200, "hello ann (5 bytes)")
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert (await client.get("/pages/about-us")).text == "about-us"
        assert (await client.get("/a/z")).text == "a:/a/z"
        missing = await client.get("/nowhere")
        assert (missing.status_code, missing.text) == (404, "Not Found")
        async with connect(server.ws_url + "/ws") as ws:
            await ws.send("hi")
            assert await ws.recv() == "1:hi"
            await ws.send("again")
            assert await ws.recv() == "2:again"
        with pytest.raises(InvalidStatus) as rejected:
            async with connect(server.ws_url + "/elsewhere"):
                pass
        assert rejected.value.response.status_code == 403
