"""The interface server: listeners, lifespan, and graceful shutdown around the transports.

:class:`Server` is the library object (``await start()`` → bound addresses, ``await
shutdown()``); :func:`serve` runs one until SIGTERM/SIGINT or cancellation. Listeners come from
:class:`~towpath.interface.config.ServerConfig`: ``binds`` entries (``host:port``,
``[v6]:port``, ``unix:/path``, ``fd://N``), ``unix_socket``, ``fd`` (an inherited listening
socket, as supervisord's ``fcgi-program`` passes fd 0), and ``host``/``port`` when none of
those is given. TLS wraps them all, with ALPN offering ``h2`` (unless ``http2`` is off) and
``http/1.1``.

Shutdown: stop accepting, ask every connection to finish (``Connection.shutdown``: idle ones
close now, requests in flight finish, WebSockets close 1001), wait up to
``graceful_timeout_seconds`` for connections and app tasks to end, then cut what is left and
cancel its apps; a second signal cuts at once. Lifespan shutdown runs last.

On asyncio's own event loop the listening sockets are made here and served by
:class:`~towpath.interface.accept.Listener` (an accept loop that pauses, and logs once, when
file descriptors run out); on uvloop by the loop's ``create_server``. :func:`serve` raises the
soft file-descriptor limit to the hard one first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import stat
from collections.abc import Callable
from typing import Any

from towpath.interface.accept import Listener, connection_limit, fd_limit, raise_fd_limit
from towpath.interface.accesslog import AccessLogWriter, open_access_log
from towpath.interface.config import ServerConfig, ServerConfigError
from towpath.interface.lifespan import Lifespan
from towpath.interface.protocol.base import ServerContext
from towpath.interface.protocol.http11_upgrade import (
    h2_connection_class,
    websocket_connection_class,
)
from towpath.interface.runner import ASGIApp
from towpath.interface.transport import ServerProtocol, ServerState, connection_class_for
from towpath.layers.base import stats_report
from towpath.signals import graceful_then_forced, handle_signals

__all__ = ["Address", "Server", "address_url", "parse_bind", "serve"]

logger = logging.getLogger("towpath.interface")

#: a bound address: ``(host, port)`` for TCP, the path for a unix socket
Address = tuple[str, int] | str

#: ASGI extensions every scope advertises: HTTP/1.1 (when the client sent ``TE: trailers``) and
#: HTTP/2 both send response trailers. ``websocket.http.response`` (the denial response) is
#: added by the WebSocket scope itself.
SCOPE_EXTENSIONS: dict[str, Any] = {"http.response.trailers": {}}

#: how often buffered access-log rows are flushed
ACCESS_LOG_FLUSH_SECONDS = 1.0


def parse_bind(bind: str) -> tuple[str, Any]:
    """One ``binds`` entry as ``("tcp", (host, port))``, ``("unix", path)`` or ``("fd", n)``."""
    if bind.startswith("unix:"):
        path = bind[5:]
        if not path:
            raise ServerConfigError(
                f"bind {bind!r}: give a path, as in 'unix:/run/towpath.sock'", field="binds"
            )
        return "unix", path
    if bind.startswith("fd://"):
        try:
            return "fd", int(bind[5:])
        except ValueError:
            raise ServerConfigError(
                f"bind {bind!r}: give a file descriptor number, as in 'fd://0'", field="binds"
            ) from None
    host, sep, port_text = bind.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ServerConfigError(
            f"bind {bind!r}: expected 'host:port', '[v6]:port', 'unix:/path' or 'fd://N'",
            field="binds",
        )
    return "tcp", (host, int(port_text))


def address_url(address: Address, *, tls: bool = False) -> str:
    """How to reach ``address``: ``http://127.0.0.1:8000``, ``http://[::1]:8000``,
    ``http+unix:///run/towpath.sock`` (``https`` with TLS)."""
    scheme = "https" if tls else "http"
    if isinstance(address, str):
        return f"{scheme}+unix://{address}"
    host, port = address
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def make_ssl_context(config: ServerConfig) -> ssl.SSLContext:
    """The server's TLS context: the certificate chain, ALPN h2 (if on) and http/1.1."""
    assert config.ssl_certfile is not None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(
            config.ssl_certfile, config.ssl_keyfile, password=config.ssl_keyfile_password
        )
    except (OSError, ssl.SSLError) as exc:
        raise ServerConfigError(
            f"cannot load the TLS certificate/key ({config.ssl_certfile}, {config.ssl_keyfile}): "
            f"{exc}; check --ssl-certfile and --ssl-keyfile",
            field="ssl_certfile",
        ) from None
    if config.ssl_ca_certs:
        context.load_verify_locations(config.ssl_ca_certs)
    context.set_alpn_protocols(["h2", "http/1.1"] if config.http2 else ["http/1.1"])
    if config.http2:
        # RFC 7540 9.2: TLS 1.2 or later, no compression, no renegotiation
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.options |= ssl.OP_NO_COMPRESSION
    return context


class Server:
    """One interface server for one ASGI 3 app.

    An app whose ``bounded_websocket_output`` attribute is true (the forwarding app of
    decoupled mode, which must keep reading its reply channels) has its WebSocket output
    written without waiting for the client, up to ``config.ws_output_limit_bytes`` held
    unsent per connection; past it the client is closed 1013 (``ClientTooSlow``). Any other
    app's ``send`` waits for the client, as uvicorn's does."""

    def __init__(self, app: ASGIApp, config: ServerConfig) -> None:
        self.app = app
        self.config = config
        self.context = ServerContext(
            config,
            extensions=dict(SCOPE_EXTENSIONS),
            ws_output_limit_bytes=(
                config.ws_output_limit_bytes
                if getattr(app, "bounded_websocket_output", False)
                else None
            ),
        )
        self.state = ServerState(app, self.context)
        self.addresses: list[Address] = []
        self.lifespan = Lifespan(app, config.lifespan)
        self._listeners: list[asyncio.AbstractServer | Listener] = []
        self._access_log: AccessLogWriter | None = None
        self._flush_handle: asyncio.TimerHandle | None = None
        self._started = False
        self._stopped = False
        self._force = asyncio.Event()
        self.closed = asyncio.Event()

    async def start(self) -> list[Address]:
        """Run lifespan startup, then listen; returns the bound addresses (real ports).
        Raises :class:`LifespanFailure` or ``OSError`` (nothing is left listening then)."""
        if self._started:
            raise RuntimeError("Server.start() called twice")
        self._started = True
        config = self.config
        ssl_context = make_ssl_context(config) if config.tls else None
        self._access_log = open_access_log(config.access_log)
        self.context.access_log = self._access_log
        await self.lifespan.startup()
        self.context.lifespan_state = self.lifespan.state
        _import_protocols(config)
        try:
            await self._listen(ssl_context)
        except BaseException:
            await self._close_listeners()
            await self.lifespan.shutdown()
            self._close_access_log()
            raise
        if self._access_log is not None:
            self._schedule_flush()
        return self.addresses

    async def _listen(self, ssl_context: ssl.SSLContext | None) -> None:
        config = self.config
        loop = asyncio.get_running_loop()
        state = self.state

        def factory() -> ServerProtocol:
            return ServerProtocol(state)

        targets: list[tuple[str, Any]] = [parse_bind(bind) for bind in config.binds]
        if config.unix_socket:
            targets.append(("unix", config.unix_socket))
        if config.fd is not None:
            targets.append(("fd", config.fd))
        if not targets:
            targets.append(("tcp", (config.host, config.port)))
        # asyncio's selector loop (not uvloop, whose accept loop is its own): our accept loop
        own_accept = isinstance(loop, asyncio.SelectorEventLoop)
        for kind, where in targets:
            listener: asyncio.AbstractServer | Listener
            if own_accept:
                for sock in _listening_sockets(kind, where, config.backlog):
                    self._listeners.append(Listener(sock, factory, ssl_context))
                    self._add_address(sock)
                continue
            if kind == "tcp":
                host, port = where
                listener = await loop.create_server(
                    factory, host, port, ssl=ssl_context, backlog=config.backlog,
                    reuse_address=True,
                )  # fmt: skip
            elif kind == "unix":
                listener = await loop.create_unix_server(
                    factory, where, ssl=ssl_context, backlog=config.backlog
                )
            else:
                sock = _inherited_socket(where)
                if sock.family == socket.AF_UNIX:
                    listener = await loop.create_unix_server(
                        factory, sock=sock, ssl=ssl_context, backlog=config.backlog
                    )
                else:
                    listener = await loop.create_server(
                        factory, sock=sock, ssl=ssl_context, backlog=config.backlog
                    )
            self._listeners.append(listener)
            for transport_socket in listener.sockets:
                self._add_address(transport_socket)

    def _add_address(self, sock: Any) -> None:
        name = sock.getsockname()
        if isinstance(name, tuple):
            self.addresses.append((str(name[0]), int(name[1])))
        else:
            self.addresses.append(name.decode() if isinstance(name, bytes) else str(name))

    def _schedule_flush(self) -> None:
        log = self._access_log
        if log is None or self._stopped:
            return
        log.flush()
        self._flush_handle = asyncio.get_running_loop().call_later(
            ACCESS_LOG_FLUSH_SECONDS, self._schedule_flush
        )

    def _close_access_log(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._access_log is not None:
            self._access_log.close()

    async def _close_listeners(self) -> None:
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener.close()
        for listener in listeners:
            if isinstance(listener, Listener):
                await listener.wait_closed()

    def force(self) -> None:
        """Cut the graceful period short (a second signal)."""
        self._force.set()

    async def shutdown(self) -> None:
        """Stop accepting, let in-flight work finish (bounded), cut the rest, run lifespan
        shutdown. Idempotent; a second caller waits for the first."""
        if self._stopped:
            await self.closed.wait()
            return
        self._stopped = True
        try:
            await self._shutdown()
        finally:
            self.closed.set()

    async def _shutdown(self) -> None:
        state = self.state
        self.context.shutting_down = True
        await self._close_listeners()
        for connection in list(state.connections):
            connection.shutdown(1001)
        drained = state.drained = asyncio.Event()
        state.check_drained()
        if not drained.is_set():
            waiters = {
                asyncio.ensure_future(drained.wait()),
                asyncio.ensure_future(self._force.wait()),
            }
            _, pending = await asyncio.wait(
                waiters,
                timeout=self.config.graceful_timeout_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
            for waiter in pending:
                waiter.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if state.connections or state.tasks:
            logger.warning(
                "graceful shutdown: cutting %d connection(s) and %d application task(s) still "
                "running", len(state.connections), len(state.tasks)
            )  # fmt: skip
            for connection in list(state.connections):
                connection.force_close()
            tasks = list(state.tasks)
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=5.0)
            # the transports' connection_lost runs on the next loop turns
            for _ in range(3):
                if not state.connections:
                    break
                await asyncio.sleep(0)
        await self.lifespan.shutdown()
        self._close_access_log()


def _import_protocols(config: ServerConfig) -> None:
    """Import the protocol modules now, not on the first connection that needs them: a server
    out of file descriptors could not open their files then."""
    connection_class_for(None)
    with contextlib.suppress(ImportError):
        websocket_connection_class()
        if config.http2:
            connection_class_for("h2")
            h2_connection_class()


def _listening_sockets(kind: str, where: Any, backlog: int) -> list[socket.socket]:
    """Bound, listening sockets for one target of :func:`parse_bind` (a TCP host may resolve to
    several addresses, each gets one, as ``loop.create_server`` does). ``OSError`` naming the
    address when one cannot be bound (nothing is left open then)."""
    if kind == "fd":
        sock = _inherited_socket(where)
        sock.listen(backlog)
        return [sock]
    made: list[socket.socket] = []
    try:
        if kind == "unix":
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(os.stat(where).st_mode):
                    os.remove(where)  # a stale socket file of an earlier run
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            made.append(sock)
            _bind(sock, where)
        else:
            host, port = where
            infos = socket.getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            seen: set[tuple[int, Any]] = set()
            for family, kind_, proto, _, address in infos:
                if (family, address) in seen:
                    continue
                seen.add((family, address))
                sock = socket.socket(family, kind_, proto)
                made.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                _bind(sock, address)
        for sock in made:
            sock.listen(backlog)
    except BaseException:
        for sock in made:
            sock.close()
        raise
    return made


def _bind(sock: socket.socket, address: Any) -> None:
    try:
        sock.bind(address)
    except OSError as exc:
        raise OSError(
            exc.errno, f"error while attempting to bind on address {address!r}: {exc.strerror}"
        ) from None


def _inherited_socket(fd: int) -> socket.socket:
    """The listening socket on file descriptor ``fd`` (not closed when it is fd 0-2: the
    process manager owns it, we only listen on a duplicate)."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError as exc:
        raise ServerConfigError(
            f"fd {fd}: not an open socket ({exc}); --fd needs a listening socket inherited "
            "from the process manager (supervisord fcgi-program: --fd 0)",
            field="fd",
        ) from None
    if sock.type != socket.SOCK_STREAM:
        sock.close()
        raise ServerConfigError(
            f"fd {fd}: not a stream socket; --fd needs a listening TCP/unix socket", field="fd"
        )
    sock.setblocking(False)
    return sock


async def serve(
    app: ASGIApp,
    config: ServerConfig,
    *,
    ready: Callable[[list[Address]], Any] | None = None,
) -> None:
    """Run a :class:`Server` until SIGTERM/SIGINT (graceful; a second signal forces) or until
    cancelled. ``ready`` is called with the bound addresses once listening. The soft
    file-descriptor limit is raised to the hard one first (:func:`raise_fd_limit`)."""
    before, after = raise_fd_limit()
    if after != before:
        logger.debug("file-descriptor limit raised from %d to %d", before, after)
    if config.max_connections is not None and config.max_connections > connection_limit():
        logger.warning(
            "--max-connections %d is above what the file-descriptor limit (%d) allows; "
            "connections past about %d will wait unaccepted: raise the limit (ulimit -n) or "
            "lower --max-connections", config.max_connections, fd_limit(), connection_limit(),
        )  # fmt: skip
    server = Server(app, config)
    await server.start()
    stop = asyncio.Event()
    on_signal = graceful_then_forced(stop.set, server.force, logger=logger)
    try:
        with handle_signals(on_signal, on_stats=lambda: log_stats(app)):
            try:
                if ready is not None:
                    ready(list(server.addresses))
                await stop.wait()
            finally:
                await asyncio.shield(server.shutdown())
    finally:
        log_stats(app)


def log_stats(app: object) -> None:
    """Log the forwarding app's and its layer's counters as one JSON line (``stats {...}``);
    nothing for a direct-mode app, which keeps none."""
    forwarding = getattr(app, "stats", None)
    if forwarding is None:
        return
    layer = getattr(app, "layer", None)
    logger.info(
        "stats %s", stats_report(forwarding=forwarding, layer=getattr(layer, "stats", None))
    )
