"""``Router``: a route list compiled for matching, and an ASGI app in its own right.

A worker asks ``router.match(channel, message)`` for each message it receives. Served
directly (``towpath serve myapp:router``, or mounted in another app), the router dispatches on
the scope's type and path, so the same consumers run in-process with no worker and no layer
between client and code.

Filters see the scope's keys for connection channels (``http.request``,
``websocket.connect``) and the message's own keys otherwise. ``path`` is matched relative to
the scope's ``root_path`` (the wire protocol puts ``root_path`` in front of ``path``, as ASGI
servers do today); an ``include(..., path=...)`` appends what it matched to ``root_path`` for
the inner routes and leaves ``path`` whole.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, cast

from towpath.config import import_from_string
from towpath.consumers.messages import local_reply_channel
from towpath.routing.fallbacks import not_found, reject_websocket
from towpath.routing.routes import CONNECTION_CHANNELS, Filters, Include, Kind, Route, Target
from towpath.wire import HTTP_REQUEST_CHANNEL, WEBSOCKET_CONNECT_CHANNEL

__all__ = ["Match", "Router", "call_message_consumer"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_SCOPE_CHANNELS = {"http": HTTP_REQUEST_CHANNEL, "websocket": WEBSOCKET_CONNECT_CHANNEL}
_MAX_DEPTH = 32


@dataclasses.dataclass(slots=True)
class Match:
    """What to run for a message.

    ``kind`` is ``"asgi"`` (start ``target(scope, receive, send)`` with ``scope``) or
    ``"message"`` (call ``target(message, **kwargs)``; ``sync`` targets belong in a thread
    pool). ``route`` is ``None`` for the built-in 404 / WebSocket-rejection fallbacks.
    """

    kind: Kind
    target: Target
    kwargs: dict[str, Any]
    scope: dict[str, Any] | None
    route: Route | None = None
    sync: bool = False

    @property
    def fallback(self) -> bool:
        """True when no route matched and this is the built-in 404 / rejection."""
        return self.route is None


@dataclasses.dataclass(frozen=True, slots=True)
class _Entry:
    route: Route
    #: (filters, strip the path match?) per include level, then the route's own filters
    levels: tuple[tuple[Filters, bool], ...]
    filtered: bool


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _load(routes: object, depth: int) -> list[object]:
    if depth > _MAX_DEPTH:
        raise ValueError(f"Routes nested more than {_MAX_DEPTH} deep: does an include() loop?")
    if isinstance(routes, str):
        routes = import_from_string(routes)
    if isinstance(routes, Router):
        return list(routes.routes)
    if not isinstance(routes, list | tuple):
        raise TypeError(
            "Routes must be a list of route()/include() entries, a Router or a "
            f'"module:attr" string naming one, not {type(routes).__name__}: {routes!r:.80}'
        )
    for item in routes:
        if not isinstance(item, Route | Include):
            hint = " (call route(...) on it)" if isinstance(item, tuple) else ""
            raise TypeError(f"Route list entry {item!r:.80} is not a route() or include(){hint}")
    return list(routes)


class Router:
    """Routes, compiled. ``Router(routes)`` takes a list, another ``Router`` or a
    ``"module:attr"`` string; errors name the offending entry."""

    __slots__ = ("_by_channel", "channels", "routes")

    def __init__(self, routes: object) -> None:
        self.routes: list[object] = _load(routes, 0)
        self._by_channel: dict[str, list[_Entry]] = {}
        self._flatten(self.routes, (), 0)
        #: every channel a route names: what a worker listens on (before its filters)
        self.channels: frozenset[str] = frozenset(self._by_channel)

    def _flatten(
        self, routes: Iterable[object], levels: tuple[tuple[Filters, bool], ...], depth: int
    ) -> None:
        for item in routes:
            if isinstance(item, Include):
                inner = _load(item.routes, depth + 1)
                self._flatten(inner, (*levels, (item.filters, True)), depth + 1)
            else:
                assert isinstance(item, Route)  # _load checked
                all_levels = (*levels, (item.filters, False))
                filtered = any(filters for filters, _ in all_levels)
                entry = _Entry(item, all_levels, filtered)
                self._by_channel.setdefault(item.channel, []).append(entry)

    # -- matching -------------------------------------------------------------------------------

    def match(self, channel: str, message: dict[str, Any]) -> Match | None:
        """The first route for ``channel`` whose filters pass; for an unrouted ``http.request``
        or ``websocket.connect`` the 404 / rejection fallback; otherwise ``None``."""
        scope = message.get("scope") if channel in CONNECTION_CHANNELS else None
        if scope is not None and not isinstance(scope, dict):
            scope = None
        return self._match(channel, scope, message)

    def _match(
        self, channel: str, scope: dict[str, Any] | None, message: dict[str, Any] | None
    ) -> Match | None:
        for entry in self._by_channel.get(channel, ()):
            if not entry.filtered:
                route = entry.route
                given = scope if route.kind == "asgi" else None
                return Match(route.kind, route.target, {}, given, route, route.sync)
            found = _match_entry(entry, scope, message)
            if found is not None:
                return found
        if channel == HTTP_REQUEST_CHANNEL:
            return Match("asgi", not_found, {}, scope if scope is not None else {})
        if channel == WEBSOCKET_CONNECT_CHANNEL:
            return Match("asgi", reject_websocket, {}, scope if scope is not None else {})
        return None

    # -- in-process ASGI ------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve ``scope`` in-process: route on its type and path and run the target."""
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
            return
        channel = _SCOPE_CHANNELS.get(kind)
        if channel is None:
            raise ValueError(f"Router cannot serve a {kind!r} scope; it serves http and websocket")
        match = self._match(channel, scope if isinstance(scope, dict) else dict(scope), None)
        assert match is not None  # connection channels always fall back
        if match.kind == "asgi":
            assert match.scope is not None
            await cast(Awaitable[None], match.target(match.scope, receive, send))
        elif kind == "http":
            await _serve_http_message(match, scope, receive, send)
        else:
            await self._serve_websocket_messages(match, scope, receive, send)

    async def _serve_websocket_messages(
        self, match: Match, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Channels 1 style functions on websocket.connect / receive / disconnect, fed as a
        worker would feed them (with ``order``), replying through a local reply channel."""
        await receive()  # websocket.connect
        with local_reply_channel(send) as reply_channel:
            message = {
                "type": "websocket.connect",
                "reply_channel": reply_channel,
                "scope": dict(scope),
                "order": 0,
            }
            await call_message_consumer(match, message)
            order = 0
            while True:
                event = await receive()
                order += 1
                event_type = event["type"]
                message = {**event, "reply_channel": reply_channel, "order": order}
                found = self._match(event_type, None, message)
                if found is not None and found.kind == "message":
                    await call_message_consumer(found, message)
                if event_type == "websocket.disconnect":
                    return

    def __repr__(self) -> str:
        count = sum(len(entries) for entries in self._by_channel.values())
        return f"<Router {count} routes on {', '.join(sorted(self.channels)) or 'no channels'}>"


def _match_entry(
    entry: _Entry, scope: dict[str, Any] | None, message: dict[str, Any] | None
) -> Match | None:
    source = scope if scope is not None else (message or {})
    path: str | None = None
    stripped = ""
    kwargs: dict[str, Any] = {}
    for filters, strip in entry.levels:
        for key, pattern in filters:
            if key == "path":
                if path is None:
                    path = _text(source.get("path"))
                    if path is None:
                        return None
                    root_path = _text(source.get("root_path"))
                    if root_path and path.startswith(root_path):
                        path = path[len(root_path) :]
                value: str | None = path
            else:
                value = _text(source.get(key))
                if value is None and scope is not None and message is not None:
                    value = _text(message.get(key))
            if value is None:
                return None
            found = pattern.match(value)
            if found is None:
                return None
            for name, group in found.groupdict().items():
                if group is not None:
                    kwargs[name] = group
            if strip and key == "path":
                stripped += value[: found.end()]
                path = value[found.end() :]
    route = entry.route
    if route.kind == "message":
        return Match("message", route.target, kwargs, None, route, route.sync)
    new_scope = dict(scope) if scope is not None else {}
    outer = new_scope.get("url_route")
    if isinstance(outer, dict):
        args = tuple(outer.get("args", ()))
        new_kwargs = {**outer.get("kwargs", {}), **kwargs}
    else:
        args, new_kwargs = (), kwargs
    new_scope["url_route"] = {"args": args, "kwargs": new_kwargs}
    if stripped:
        new_scope["root_path"] = (new_scope.get("root_path") or "") + stripped
    return Match("asgi", route.target, kwargs, new_scope, route, False)


async def call_message_consumer(match: Match, message: dict[str, Any]) -> None:
    """Call a ``"message"`` match's target: awaited when async, in the default thread pool
    when it is a plain ``def``."""
    if match.sync:
        await asyncio.to_thread(functools.partial(match.target, message, **match.kwargs))
    else:
        result = match.target(message, **match.kwargs)
        if result is not None:
            await result


async def _serve_http_message(match: Match, scope: Scope, receive: Receive, send: Send) -> None:
    """A message consumer serving HTTP in-process: the whole body in one message, the reply
    through a local reply channel that writes to ``send``."""
    chunks: list[bytes] = []
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            return
        chunks.append(event.get("body", b""))
        if not event.get("more_body"):
            break
    with local_reply_channel(send) as reply_channel:
        message = {
            "type": "http.request",
            "reply_channel": reply_channel,
            "scope": dict(scope),
            "body": b"".join(chunks),
            "more_body": False,
        }
        await call_message_consumer(match, message)


async def _lifespan(receive: Receive, send: Send) -> None:
    """A router has nothing to start: acknowledge startup and shutdown."""
    while True:
        event = await receive()
        if event["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif event["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
