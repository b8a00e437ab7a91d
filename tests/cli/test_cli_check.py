"""``towpath check`` as a real process: the probe crosses each layer's server (a real
redis-server started here, RabbitMQ at ``RABBITMQ_URL``, an IPC store in a temporary directory),
leaves nothing behind, and a server that is down or silent is a ``FAILED`` line naming its
address within a bounded time."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from towpath.probe import check_layer
from towpath.testing.processes import TOWPATH
from towpath.testing.services import RedisServer, RedisServerFactory, free_port

REDIS = "towpath.layers.redis.RedisChannelLayer"
PUBSUB = "towpath.layers.redis.RedisPubSubChannelLayer"
RABBITMQ = "towpath.layers.rabbitmq.RabbitMQChannelLayer"
IPC = "towpath.layers.ipc.IPCChannelLayer"
MEMORY = "towpath.layers.InMemoryChannelLayer"


def write_settings(directory: Path, layers: dict[str, dict[str, Any]]) -> Path:
    path = directory / "check_settings.py"
    path.write_text(f"CHANNEL_LAYERS = {layers!r}\n")
    return path


def towpath_check(settings: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TOWPATH, "check", "--settings", str(settings), *args],
        capture_output=True,
        text=True,
        timeout=40,
        cwd=settings.parent,
    )


def client(server: RedisServer) -> redis.Redis:
    return redis.Redis(host=server.host, port=server.port)


def calls(server: RedisServer, command: str) -> int:
    stats = client(server).info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose listener accepts connections (the kernel completes the handshake) and
    never answers: a hung server."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


# -- Redis ---------------------------------------------------------------------------------------


@pytest.mark.redis
def test_redis_round_trip_goes_through_every_shard(
    tmp_path: Path, redis_server_factory: RedisServerFactory
) -> None:
    one, two = redis_server_factory(), redis_server_factory()
    settings = write_settings(
        tmp_path,
        {
            "default": {"BACKEND": REDIS, "CONFIG": {"hosts": [one.url]}},
            "sharded": {"BACKEND": REDIS, "CONFIG": {"hosts": [one.url, two.url]}},
        },
    )
    for server in (one, two):
        client(server).config_resetstat()
    result = towpath_check(settings)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("default: ok (RedisChannelLayer, round trip ")
    assert lines[0].endswith(f" ms via {one.url})")
    assert f"ms via {one.url}, " in lines[1] and lines[1].endswith(f" ms via {two.url})")
    assert result.stderr == ""
    # the messages went through both servers (a SEND script per message) ...
    assert calls(one, "evalsha") >= 4 and calls(two, "evalsha") >= 2
    # ... and left nothing there
    assert client(one).dbsize() == 0 and client(two).dbsize() == 0


@pytest.mark.redis
def test_redis_through_sentinel(tmp_path: Path, redis_server_factory: RedisServerFactory) -> None:
    master = redis_server_factory()
    sentinel = redis_server_factory.sentinel(master, "checked")
    settings = write_settings(
        tmp_path,
        {
            "default": {
                "BACKEND": REDIS,
                "CONFIG": {"sentinels": [("127.0.0.1", sentinel.port)], "service_name": "checked"},
            }
        },
    )
    client(master).config_resetstat()
    result = towpath_check(settings)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith(" ms via sentinel:checked)")
    assert calls(master, "evalsha") >= 2 and client(master).dbsize() == 0


@pytest.mark.redis
def test_redis_down_is_a_failure_naming_the_address(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    settings = write_settings(
        tmp_path, {"default": {"BACKEND": REDIS, "CONFIG": {"hosts": [redis_server.url]}}}
    )
    assert towpath_check(settings).returncode == 0
    redis_server.kill()
    started = time.monotonic()
    result = towpath_check(settings, "--timeout", "30")
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(
        f"default: FAILED Redis {redis_server.url} unreachable: Error 111 connecting to "
    )
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    # it fails on the first refused connection, not after the layer's retry_timeout (10 s)
    assert elapsed < 10


@pytest.mark.redis
def test_redis_pubsub_subscribes_before_it_publishes(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    settings = write_settings(
        tmp_path, {"default": {"BACKEND": PUBSUB, "CONFIG": {"hosts": [redis_server.url]}}}
    )
    client(redis_server).config_resetstat()
    result = towpath_check(settings)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("default: ok (RedisPubSubChannelLayer, round trip ")
    assert result.stdout.rstrip().endswith(f" ms via {redis_server.url})")
    # two PUBLISHes, and each reached the probe's subscription (a lost one would hang the check)
    assert calls(redis_server, "publish") == 2
    assert calls(redis_server, "subscribe") >= 1


def test_unreachable_and_silent_servers_fail_within_bounds(
    tmp_path: Path, silent_port: int
) -> None:
    closed = free_port()
    settings = write_settings(
        tmp_path,
        {
            "refused": {"BACKEND": REDIS, "CONFIG": {"hosts": [f"redis://127.0.0.1:{closed}"]}},
            "pubsub": {"BACKEND": PUBSUB, "CONFIG": {"hosts": [f"redis://127.0.0.1:{closed}"]}},
            "rabbitmq": {
                "BACKEND": RABBITMQ,
                "CONFIG": {"url": f"amqp://guest:guest@127.0.0.1:{closed}/"},
            },
            "silent": {
                "BACKEND": REDIS,
                "CONFIG": {"hosts": [f"redis://127.0.0.1:{silent_port}"]},
            },
            "silent-rabbitmq": {
                "BACKEND": RABBITMQ,
                "CONFIG": {"url": f"amqp://guest:guest@127.0.0.1:{silent_port}/"},
            },
        },
    )
    started = time.monotonic()
    result = towpath_check(settings)  # the default --timeout, 5 s
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert [line.split(":", 1)[0] for line in lines] == [
        "refused",
        "pubsub",
        "rabbitmq",
        "silent",
        "silent-rabbitmq",
    ]
    assert lines[0].startswith(f"refused: FAILED Redis redis://127.0.0.1:{closed} unreachable")
    assert lines[1].startswith(
        f"pubsub: FAILED Redis redis://127.0.0.1:{closed} unreachable (subscribe)"
    )
    assert lines[2].startswith(
        f"rabbitmq: FAILED RabbitMQ amqp://guest:***@127.0.0.1:{closed}/ unreachable"
    )
    # a silent server fails after --timeout, or after the layer's own connect timeout (also
    # 5 s) if that comes first
    for line, name in ((lines[3], "silent"), (lines[4], "silent-rabbitmq")):
        assert line.startswith(f"{name}: FAILED ") and f"127.0.0.1:{silent_port}" in line
    assert "Traceback" not in result.stderr
    # the layers are checked at once: about one --timeout, not one per layer
    assert elapsed < 15


def test_silent_server_fails_after_the_timeout(tmp_path: Path, silent_port: int) -> None:
    settings = write_settings(
        tmp_path,
        {"default": {"BACKEND": REDIS, "CONFIG": {"hosts": [f"redis://127.0.0.1:{silent_port}"]}}},
    )
    result = towpath_check(settings, "--timeout", "1")
    assert result.returncode == 1
    assert result.stderr == (
        f"default: FAILED no round trip within 1 s via redis://127.0.0.1:{silent_port}\n"
    )


# -- RabbitMQ, IPC, in-memory --------------------------------------------------------------------


@pytest.mark.rabbitmq
def test_rabbitmq_round_trip(tmp_path: Path, rabbitmq_url: str) -> None:
    settings = write_settings(
        tmp_path, {"default": {"BACKEND": RABBITMQ, "CONFIG": {"url": rabbitmq_url}}}
    )
    result = towpath_check(settings)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("default: ok (RabbitMQChannelLayer, round trip ")
    assert result.stderr == ""


@pytest.mark.rabbitmq
async def test_rabbitmq_probe_deletes_its_queue(rabbitmq_url: str) -> None:
    import aio_pika
    from aiormq.exceptions import ChannelNotFoundEntity

    from towpath.layers.rabbitmq import RabbitMQChannelLayer

    layer = RabbitMQChannelLayer(url=rabbitmq_url, prefix="towpath-check-test")
    report = await check_layer("default", layer)
    assert report.ok, report
    connection = await aio_pika.connect(rabbitmq_url)
    try:
        channel = await connection.channel()
        with pytest.raises(ChannelNotFoundEntity):
            await channel.declare_queue(layer.queue_of(report.channels[0]), passive=True)
    finally:
        await connection.close()


def test_ipc_round_trip_leaves_no_file(tmp_path: Path) -> None:
    settings = write_settings(
        tmp_path,
        {"default": {"BACKEND": IPC, "CONFIG": {"prefix": "checked", "directory": str(tmp_path)}}},
    )
    store = tmp_path / "towpath-ipc-checked"
    result = towpath_check(settings)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("default: ok (IPCChannelLayer, round trip ")
    assert result.stdout.rstrip().endswith(f" ms via {store})")
    # the check made the store, so it takes it away again
    assert not store.exists()


async def test_ipc_probe_in_a_store_in_use_removes_only_its_queue(tmp_path: Path) -> None:
    from towpath.layers.ipc import IPCChannelLayer

    running = IPCChannelLayer(prefix="inuse", directory=str(tmp_path))
    await running.send("jobs", {"type": "job"})  # another process's store, with a queue
    store = tmp_path / "towpath-ipc-inuse"
    before = sorted(path.name for path in store.iterdir())
    report = await check_layer("default", IPCChannelLayer(prefix="inuse", directory=str(tmp_path)))
    assert report.ok, report
    assert sorted(path.name for path in store.iterdir()) == before
    assert await running.receive("jobs") == {"type": "job"}
    await running.close()


def test_in_memory_layer_warns_that_workers_cannot_use_it(tmp_path: Path) -> None:
    settings = write_settings(tmp_path, {"default": {"BACKEND": MEMORY}})
    result = towpath_check(settings)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("default: ok (InMemoryChannelLayer, round trip ")
    assert result.stdout.rstrip().endswith(" ms via this process)")
    assert result.stderr.startswith(
        "default: warning: the in-memory layer carries messages inside one process only: "
        "`towpath runworker` cannot serve it"
    )


# -- ROUTING -------------------------------------------------------------------------------------


def test_routing_that_does_not_import_is_a_failure(tmp_path: Path) -> None:
    (tmp_path / "check_routes.py").write_text("import os\nROUTES = [undefined_route]\n")
    settings = write_settings(
        tmp_path,
        {
            "default": {"BACKEND": MEMORY, "ROUTING": "no_such_routing_mod:routes"},
            "jobs": {"BACKEND": MEMORY, "ROUTING": "check_routes:ROUTES"},
        },
    )
    result = towpath_check(settings)
    assert result.returncode == 1
    failed = [line for line in result.stderr.splitlines() if "FAILED" in line]
    assert failed == [
        "default: FAILED ROUTING 'no_such_routing_mod:routes': Could not import module "
        "'no_such_routing_mod' (from 'no_such_routing_mod:routes'): No module named "
        "'no_such_routing_mod'",
        f"jobs: FAILED NameError in {tmp_path / 'check_routes.py'}, line 2: name "
        "'undefined_route' is not defined (loading ROUTING 'check_routes:ROUTES')",
    ]
    # the round trips themselves worked
    assert result.stdout.startswith("default: ok (InMemoryChannelLayer")
    assert "Traceback" not in result.stderr


def test_routing_that_imports_is_reported(tmp_path: Path) -> None:
    (tmp_path / "good_routes.py").write_text("ROUTES = []\n")
    settings = write_settings(
        tmp_path, {"default": {"BACKEND": MEMORY, "ROUTING": "good_routes:ROUTES"}}
    )
    result = towpath_check(settings)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("; ROUTING 'good_routes:ROUTES' loads)")
