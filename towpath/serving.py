"""The library entry points the ``towpath`` command calls: :func:`serve`, :func:`run_worker`,
:func:`run_server` and :func:`check` (exported as ``towpath.serve`` and so on).

Each takes the config objects the CLI builds from its options (``ServerConfig``,
``WorkerConfig``, ``ForwardingSettings``), runs until SIGTERM/SIGINT (or Ctrl-C) and returns; a
problem is raised, never turned into an exit: a :class:`~towpath.errors.ConfigError` for a bad
setting, ``ImportError`` (``towpath.config.UserCodeError`` for a bug in user code) or
``ChannelLayerError`` for settings, apps and layers that do not load, ``LifespanFailure`` for an
app whose start-up failed, ``OSError`` for an address that cannot be listened on. The CLI
chooses the exit status (``towpath.cli.base``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from towpath.interface.config import ServerConfig, ServerConfigError

if TYPE_CHECKING:
    from towpath.interface.forwarding.settings import ForwardingSettings
    from towpath.probe import LayerReport
    from towpath.worker.config import WorkerConfig
    from towpath.worker.loop import Worker

__all__ = ["check", "expand_binds", "run_server", "run_worker", "serve"]

#: called once the server listens, with the addresses it listens on
Ready = Callable[[list[Any]], Any]


def expand_binds(
    binds: Sequence[str],
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    unix_socket: str | None = None,
    fd: int | None = None,
) -> tuple[str, ...]:
    """``towpath serve``'s ``-b`` entries as ``ServerConfig.binds``: comma lists split, a bare
    host (daphne's ``-b 0.0.0.0``) given ``port`` (8000 when ``None``), and ``host:port``
    added when a ``port`` is given beside other listeners. Raises ``ServerConfigError``
    (``field="binds"``) for an entry that is not ``host:port``, ``[v6]:port``, ``unix:/path``
    or ``fd://N``."""
    from towpath.interface.server import parse_bind

    result = []
    for bind in binds:
        for entry in bind.split(","):
            entry = entry.strip()
            if not entry:
                continue
            is_bare_v6 = entry.count(":") > 1 and not entry.startswith("[")
            if entry.startswith(("unix:", "fd://")) or (":" in entry and not is_bare_v6):
                result.append(entry)
            else:
                name = f"[{entry}]" if is_bare_v6 else entry
                result.append(f"{name}:{8000 if port is None else port}")
    # a -b entry rewritten (a bare host given the port, or a comma list) takes --port itself
    bare_host = any(bind not in result for bind in binds)
    if port is not None and not bare_host and (binds or unix_socket or fd is not None):
        result.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    for entry in result:
        parse_bind(entry)
    return tuple(result)


def serve(
    app: Any = None,
    *,
    settings: str | None = None,
    layer: str = "default",
    config: ServerConfig | None = None,
    forwarding: ForwardingSettings | None = None,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    ready: Ready | None = None,
) -> None:
    """``towpath serve``: serve ``app`` (an ASGI app, or ``"module:attr"`` imported with the
    working directory on the path) in direct mode; with no ``app``, decoupled mode: every
    connection is forwarded to the workers of the channel layer ``layer`` of ``settings`` (a
    settings module, ``module:attr`` naming a layer, or ``None``: ``TOWPATH_SETTINGS``, else
    the IPC layer), as ``forwarding`` says. Runs until SIGTERM/SIGINT."""
    from towpath.config import ImportFromStringError, import_from_string, project_on_path
    from towpath.interface import server
    from towpath.interface.forwarding.settings import ForwardingConfigError, ForwardingSettings

    config = ServerConfig() if config is None else config
    if app is not None and settings is not None:
        raise ServerConfigError("give either an app or settings (decoupled mode), not both")
    if app is not None and forwarding is not None:
        raise ForwardingConfigError("forwarding settings apply to decoupled mode (no app) only")
    if isinstance(app, str):
        project_on_path()
        path, app = app, import_from_string(app, what="the app")
        if not callable(app):
            raise ImportFromStringError(f"{path!r} is not an ASGI app: {app!r:.60}")
    elif app is None:
        from towpath.interface.forwarding import forwarding_app_from_settings

        if forwarding is None:
            forwarding = ForwardingSettings(max_body_bytes=config.max_body_bytes)
        app = forwarding_app_from_settings(settings, layer, forwarding=forwarding)
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(server.serve(app, config, ready=ready))
    except KeyboardInterrupt:
        return


def _worker_layer(settings: str | None, layer: str, *, in_memory: bool) -> tuple[Any, str | None]:
    """The channel layer ``layer`` of ``settings`` (built and registered) and its ``ROUTING``;
    with ``in_memory`` and no settings, a fresh in-memory layer."""
    from towpath.config import configure_layers, load_settings
    from towpath.layers.memory import InMemoryChannelLayer
    from towpath.layers.registry import register_channel_layer

    if settings is None and in_memory:
        channel_layer = InMemoryChannelLayer()
        register_channel_layer(layer, channel_layer)
        return channel_layer, None
    loaded = load_settings(settings, embedded=not in_memory)
    routing = loaded.layer(layer).routing
    return configure_layers(loaded)[layer], routing


def _make_worker(
    channel_layer: Any,
    routing: str | None,
    asgi: str | None,
    configured: str | None,
    config: WorkerConfig | None,
    layer: str,
) -> Worker:
    from towpath.worker.channels import WorkerConfigError
    from towpath.worker.config import WorkerConfig
    from towpath.worker.run import make_worker

    if routing is not None and asgi is not None:
        raise WorkerConfigError("give routing or asgi, not both", option="--routing")
    if asgi is None:
        routing = routing or configured
        if routing is None:
            raise WorkerConfigError(
                "no routing: pass --routing module:attr (a route list) or --asgi module:app, or "
                "set ROUTING in the layer's CHANNEL_LAYERS entry",
                option="--routing",
            )
    config = WorkerConfig(layer_alias=layer) if config is None else config
    return make_worker(channel_layer, config.replace(layer_alias=layer), routing, asgi)


def run_worker(
    settings: str | None = None,
    *,
    layer: str = "default",
    routing: str | None = None,
    asgi: str | None = None,
    config: WorkerConfig | None = None,
) -> None:
    """``towpath runworker``: a worker on the channel layer ``layer`` of ``settings`` (``None``:
    ``TOWPATH_SETTINGS``, else the IPC layer) running the route list ``routing``
    (``"module:attr"``; default: the layer's ``ROUTING``) or hosting the ASGI app ``asgi``,
    until SIGTERM/SIGINT."""
    from towpath.layers.base import InvalidChannelLayerError
    from towpath.layers.memory import InMemoryChannelLayer
    from towpath.worker import run

    channel_layer, configured = _worker_layer(settings, layer, in_memory=False)
    if isinstance(channel_layer, InMemoryChannelLayer):
        raise InvalidChannelLayerError(
            f"layer {layer!r} is an InMemoryChannelLayer: the in-memory layer cannot cross "
            "processes: use towpath runserver, or configure Redis/IPC"
        )
    worker = _make_worker(channel_layer, routing, asgi, configured, config, layer)
    try:
        asyncio.run(run.run_worker(worker))
    except KeyboardInterrupt:
        return


def run_server(
    settings: str | None = None,
    *,
    layer: str = "default",
    routing: str | None = None,
    asgi: str | None = None,
    config: ServerConfig | None = None,
    worker: WorkerConfig | None = None,
    http_timeout_seconds: float | None = 120.0,
    ready: Ready | None = None,
) -> None:
    """``towpath runserver``: an interface server and a worker in one process, on the channel
    layer ``layer`` of ``settings`` (``None``: a fresh in-memory layer), running ``routing`` or
    hosting ``asgi`` as :func:`run_worker` does, until SIGTERM/SIGINT."""
    from towpath import runserver

    channel_layer, configured = _worker_layer(settings, layer, in_memory=True)
    made = _make_worker(channel_layer, routing, asgi, configured, worker, layer)
    config = ServerConfig() if config is None else config
    try:
        asyncio.run(
            runserver.run_server(
                channel_layer, made, config, ready=ready, http_timeout_seconds=http_timeout_seconds
            )
        )
    except KeyboardInterrupt:
        return


def check(settings: str | None = None, *, timeout: float = 5.0) -> list[LayerReport]:
    """``towpath check``: build every layer of ``settings`` (``None``: ``TOWPATH_SETTINGS``,
    else the IPC layer), send one message through each layer's server and receive it back, and
    load each layer's ``ROUTING``; one :class:`~towpath.probe.LayerReport` per layer."""
    from towpath.config import configure_layers, load_settings, project_on_path
    from towpath.probe import check_layers

    project_on_path()  # ROUTING imports from the project root, as in runworker
    loaded = load_settings(settings, embedded=True)
    return check_layers(configure_layers(loaded), loaded.channel_layers, timeout=timeout)
