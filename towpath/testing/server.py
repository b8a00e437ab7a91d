"""A real interface server for tests, on a free loopback port, in the test's own event loop::

    async with running_server(app) as server:
        async with httpx.AsyncClient() as client:
            response = await client.get(server.url + "/")

``running_server`` binds 127.0.0.1 port 0 (never a fixed port), waits until it listens, and
yields the real address; leaving the block shuts the server down gracefully (with a short
``graceful_timeout_seconds`` unless the test set one). For TLS pass ``ssl_certfile`` and
``ssl_keyfile`` (e.g. from ``trustme``); the URLs then say ``https``/``wss``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from towpath.interface.config import ServerConfig
from towpath.interface.runner import ASGIApp
from towpath.interface.server import Address, Server

__all__ = ["RunningServer", "running_server"]

#: defaults for test servers (overridable): a quick drain so a test never waits long
TEST_DEFAULTS: dict[str, Any] = {"graceful_timeout_seconds": 2.0}


@dataclass(slots=True)
class RunningServer:
    """Where a test server listens: ``host``/``port`` of its first TCP listener."""

    server: Server
    host: str
    port: int
    tls: bool
    addresses: list[Address] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://{self.host}:{self.port}"

    @property
    def config(self) -> ServerConfig:
        return self.server.config


@asynccontextmanager
async def running_server(
    app: ASGIApp, config: ServerConfig | None = None, **config_changes: Any
) -> AsyncIterator[RunningServer]:
    """Start a :class:`Server` for ``app`` on 127.0.0.1 port 0 (plus any ``binds``/
    ``unix_socket``/``fd`` the config names) and shut it down on exit."""
    if config is None:
        config = ServerConfig(host="127.0.0.1", port=0, **TEST_DEFAULTS)
    else:
        config = config.replace(host="127.0.0.1", port=0)
    if config_changes:
        config = config.replace(**config_changes)
    server = Server(app, config)
    addresses = await server.start()
    try:
        tcp = [address for address in addresses if isinstance(address, tuple)]
        host, port = tcp[0] if tcp else ("127.0.0.1", 0)
        yield RunningServer(server, host, port, config.tls, list(addresses))
    finally:
        await server.shutdown()
