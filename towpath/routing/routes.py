"""Route definitions: ``route()``, ``include()`` and the target wrappers.

A route names a channel, a target and optional filters. The target is one of:

* a consumer class (anything with ``as_asgi()``): its ``as_asgi()`` app is used;
* an ASGI 3 application, a callable of ``(scope, receive, send)``;
* a message consumer, a callable of ``(message, **kwargs)`` (``async def`` or plain ``def``).

They are told apart by signature; ``asgi_app(app)`` and ``message_consumer(fn)`` say it
explicitly when a signature is ambiguous (``*args`` wrappers, builtins). Filters are regular
expressions matched with ``re.match``; their named groups become keyword arguments.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, TypeAlias, cast

from towpath.layers.base import require_valid_channel_name
from towpath.wire import HTTP_REQUEST_CHANNEL, WEBSOCKET_CONNECT_CHANNEL

__all__ = [
    "CONNECTION_CHANNELS",
    "Include",
    "Route",
    "Target",
    "asgi_app",
    "include",
    "message_consumer",
    "route",
]

#: Channels whose first message starts a connection; ASGI targets run on these only.
CONNECTION_CHANNELS = frozenset({HTTP_REQUEST_CHANNEL, WEBSOCKET_CONNECT_CHANNEL})

Kind: TypeAlias = Literal["asgi", "message"]
Target: TypeAlias = Callable[..., Awaitable[None] | None]
Filters: TypeAlias = tuple[tuple[str, "re.Pattern[str]"], ...]

_ASGI_NAMES = ("scope", "receive", "send")


@dataclasses.dataclass(frozen=True, slots=True)
class _Explicit:
    """A target whose kind was stated with ``asgi_app()`` / ``message_consumer()``."""

    kind: Kind
    target: Callable[..., Any]


def asgi_app(app: Callable[..., Any]) -> Any:
    """Mark ``app`` as an ASGI 3 application ``(scope, receive, send)`` for ``route()``."""
    if not callable(app):
        raise TypeError(f"asgi_app() needs an ASGI 3 callable, not {app!r}")
    return _Explicit("asgi", app)


def message_consumer(fn: Callable[..., Any]) -> Any:
    """Mark ``fn`` as a message consumer ``(message, **kwargs)`` for ``route()``."""
    if not callable(fn):
        raise TypeError(f"message_consumer() needs a callable, not {fn!r}")
    return _Explicit("message", fn)


def _compile_filters(where: str, filters: Mapping[str, object]) -> Filters:
    compiled: list[tuple[str, re.Pattern[str]]] = []
    for key, pattern in filters.items():
        if isinstance(pattern, re.Pattern):
            if not isinstance(pattern.pattern, str):
                raise TypeError(f"{where}: filter {key}= must be a str pattern, not {pattern!r}")
            compiled.append((key, pattern))
        elif isinstance(pattern, str):
            try:
                compiled.append((key, re.compile(pattern)))
            except re.error as exc:
                raise ValueError(
                    f"{where}: filter {key}={pattern!r} is not a regex: {exc}"
                ) from None
        else:
            raise TypeError(
                f"{where}: filter {key}= must be a regex string or compiled pattern, "
                f"not {pattern!r}"
            )
    return tuple(compiled)


def _group_names(filters: Filters) -> set[str]:
    return {name for _, pattern in filters for name in pattern.groupindex}


def _name(target: object) -> str:
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
    if qualname:
        return f"{module}.{qualname}" if module else str(qualname)
    return repr(target)


def _kind_by_signature(where: str, target: Callable[..., Any], groups: set[str]) -> Kind:
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        positional = [
            p
            for p in signature.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        required = [p for p in positional if p.default is p.empty]
        names = tuple(p.name for p in required)
        if names == _ASGI_NAMES:
            return "asgi"
        if positional and positional[0].name in ("message", "msg", "event"):
            return "message"
        if len(required) == 3 and not groups & set(names):
            return "asgi"
        if positional and len(required) <= 1 + len(groups & set(names)):
            return "message"
    raise TypeError(
        f"{where}: cannot tell whether {target!r} is an ASGI app (scope, receive, send) or a "
        "message consumer (message, **kwargs) from its signature; wrap it in "
        "towpath.routing.asgi_app(...) or towpath.routing.message_consumer(...)"
    )


class _ChannelConsumerAdapter:
    """A consumer class routed on a plain channel (Channels 4's ``ChannelNameRouter`` use):
    each message is dispatched by type to a fresh instance, as a message consumer."""

    __slots__ = ("channel", "cls", "initkwargs")

    def __init__(self, cls: type, channel: str, initkwargs: dict[str, Any]) -> None:
        self.cls = cls
        self.channel = channel
        self.initkwargs = initkwargs

    async def __call__(self, message: dict[str, Any], **kwargs: Any) -> None:
        from towpath.consumers.base import dispatch_one  # routing must not need consumers

        instance = self.cls(**self.initkwargs)
        scope = {
            "type": "channel",
            "channel": self.channel,
            "url_route": {"args": (), "kwargs": kwargs},
        }
        await dispatch_one(instance, scope, message)

    def __repr__(self) -> str:
        return f"<{_name(self.cls)} on {self.channel!r}>"


def _classify(where: str, channel: str, target: object, groups: set[str]) -> tuple[Kind, Target]:
    if isinstance(target, _Explicit):
        kind, fn = target.kind, target.target
    elif inspect.isclass(target):
        if not hasattr(target, "as_asgi"):
            raise TypeError(
                f"{where}: {_name(target)} is a class without as_asgi(); route a consumer class, "
                "an ASGI 3 app instance, or a function (ASGI 2 double-callables are not supported)"
            )
        if channel not in CONNECTION_CHANNELS:
            return "message", _ChannelConsumerAdapter(target, channel, {})
        kind, fn = "asgi", cast(Any, target).as_asgi()
    elif not callable(target):
        raise TypeError(
            f"{where}: the target must be a consumer class, an ASGI app or a message consumer "
            f"function, not {target!r}"
        )
    else:
        consumer_class = getattr(target, "consumer_class", None)  # an as_asgi() result
        if consumer_class is not None and channel not in CONNECTION_CHANNELS:
            initkwargs = dict(getattr(target, "consumer_initkwargs", None) or {})
            return "message", _ChannelConsumerAdapter(consumer_class, channel, initkwargs)
        kind = "asgi" if consumer_class is not None else _kind_by_signature(where, target, groups)
        fn = target
    if kind == "asgi" and channel not in CONNECTION_CHANNELS:
        raise TypeError(
            f"{where}: {_name(fn)} is an ASGI app, which starts with a connection, so it can only "
            f"be routed on {' or '.join(sorted(CONNECTION_CHANNELS))!s}; the worker feeds it the "
            "connection's later events. Route a message consumer (message, **kwargs) here."
        )
    return kind, fn


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class Route:
    """One ``route()``: a channel, the target to run, its kind and its filters."""

    channel: str
    target: Target
    kind: Kind
    filters: Filters
    #: a plain ``def`` message consumer: the worker runs it in a thread pool
    sync: bool = False

    def __repr__(self) -> str:
        filters = "".join(f", {key}={pattern.pattern!r}" for key, pattern in self.filters)
        return f"route({self.channel!r}, {_name(self.target)}{filters})"


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class Include:
    """One ``include()``: inner routes behind filters; a ``path`` filter strips its match."""

    routes: object
    filters: Filters

    def __repr__(self) -> str:
        filters = "".join(f", {key}={pattern.pattern!r}" for key, pattern in self.filters)
        return f"include({self.routes!r}{filters})"


def route(channel: str, target: object, **filters: str | re.Pattern[str]) -> Route:
    """A route sending ``channel`` messages that pass ``filters`` to ``target``.

    Raises ``TypeError`` naming the value for a bad channel name, a bad filter or a target
    that is neither a consumer class, an ASGI app nor a message consumer; ``ValueError`` for
    a filter that is not a valid regular expression.
    """
    where = f"route({channel!r}, {target!r})"
    try:
        require_valid_channel_name(channel)
    except TypeError as exc:
        raise TypeError(f"{where}: {exc}") from None
    compiled = _compile_filters(where, filters)
    kind, fn = _classify(where, channel, target, _group_names(compiled))
    sync = kind == "message" and not _is_async(fn)
    return Route(channel, fn, kind, compiled, sync)


def include(routes: object, **filters: str | re.Pattern[str]) -> Include:
    """The routes of ``routes`` (a list, a ``Router`` or a ``"module:attr"`` string) behind
    ``filters``. A ``path`` filter's match is stripped from the path the inner routes see and
    appended to the scope's ``root_path``; write it without a trailing slash (``^/chat``) so
    inner paths keep their leading ``/``."""
    where = f"include({routes!r})"
    if not isinstance(routes, str | list | tuple) and not hasattr(routes, "routes"):
        raise TypeError(
            f"{where}: routes must be a list of route()/include(), a Router or a "
            f'"module:attr" string, not {type(routes).__name__}'
        )
    return Include(routes, _compile_filters(where, filters))


def _is_async(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - an instance's async __call__
    return call is not None and inspect.iscoroutinefunction(call)
