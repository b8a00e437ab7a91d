"""The real-service fixtures behave as the fault tests rely on."""

from __future__ import annotations

import os
import socket

import pytest
import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from towpath.testing.services import (
    REDIS_INSTALL_HINT,
    RedisServer,
    RedisServerError,
    RedisServerFactory,
    find_redis_server,
    free_port,
    rabbitmq_reachable,
    require_service,
)


@pytest.fixture
def redis_binary() -> str:
    binary = find_redis_server()
    require_service("redis-server", binary is not None, REDIS_INSTALL_HINT)
    assert binary is not None
    return binary


def client(server: RedisServer) -> redis.Redis:
    """A sync client that fails at once instead of retrying with backoff."""
    return redis.Redis.from_url(
        server.url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=2, socket_timeout=2
    )


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert 1024 <= port <= 65535


@pytest.mark.redis
async def test_started_server_answers_ping(redis_server: RedisServer) -> None:
    assert redis_server.running
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}"
    async with redis.asyncio.Redis.from_url(redis_server.url) as conn:
        assert await conn.ping() is True
        info = await conn.info("server")
    assert info["process_id"] == redis_server.pid
    assert f"port={redis_server.port}" in repr(redis_server)
    assert "running" in repr(redis_server)


@pytest.mark.redis
def test_kill_makes_connections_fail(redis_server: RedisServer) -> None:
    with client(redis_server) as conn:
        assert conn.ping()
        redis_server.kill()
        assert not redis_server.running
        assert redis_server.pid is None
        with pytest.raises(redis.ConnectionError):
            conn.ping()
    assert "stopped" in repr(redis_server)


@pytest.mark.redis
def test_restart_keeps_port_and_empties_dataset(redis_server: RedisServer) -> None:
    port, old_pid = redis_server.port, redis_server.pid
    with client(redis_server) as conn:
        conn.set("key", "value")
        assert conn.get("key") == b"value"
    redis_server.restart()
    assert redis_server.port == port
    assert redis_server.pid not in (None, old_pid)
    with client(redis_server) as conn:
        assert conn.dbsize() == 0
        assert conn.get("key") is None


@pytest.mark.redis
def test_restart_after_kill(redis_server: RedisServer) -> None:
    port = redis_server.port
    redis_server.kill()
    redis_server.restart()
    assert redis_server.port == port
    with client(redis_server) as conn:
        assert conn.ping()


@pytest.mark.redis
def test_factory_servers_get_distinct_ports(redis_server_factory: RedisServerFactory) -> None:
    shards = [redis_server_factory() for _ in range(3)]
    assert len({s.port for s in shards}) == 3
    for i, shard in enumerate(shards):
        with client(shard) as conn:
            conn.set("shard", i)
    for i, shard in enumerate(shards):
        with client(shard) as conn:
            assert conn.get("shard") == str(i).encode()


@pytest.mark.redis
def test_factory_teardown_reaps_killed_and_running_servers(redis_binary: str) -> None:
    with RedisServerFactory(redis_binary) as factory:
        alive, killed = factory(), factory()
        pids = [alive.pid, killed.pid]
        killed.kill()
        directories = [alive.directory, killed.directory]
    assert not alive.running
    assert not killed.running
    assert not any(pid_exists(pid) for pid in pids if pid is not None)
    assert not any(d.exists() for d in directories)


@pytest.mark.redis
def test_stop_leaves_no_process(redis_server: RedisServer) -> None:
    pid = redis_server.pid
    assert pid is not None
    assert pid_exists(pid)
    redis_server.stop()
    assert not redis_server.running
    assert not pid_exists(pid)


@pytest.mark.redis
def test_context_manager_starts_and_cleans_up(redis_binary: str) -> None:
    with RedisServer(redis_binary) as server:
        pid = server.pid
        directory = server.directory
        with client(server) as conn:
            assert conn.ping()
    assert pid is not None
    assert not pid_exists(pid)
    assert not directory.exists()


@pytest.mark.redis
def test_port_taken_before_bind_moves_to_a_new_port(redis_binary: str) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        server = RedisServer(redis_binary)
        server._port = taken  # simulate losing the race between free_port() and bind
        with server:
            assert server.port != taken
            with client(server) as conn:
                assert conn.ping()


@pytest.mark.redis
def test_restart_fails_clearly_when_its_port_is_taken(redis_server: RedisServer) -> None:
    port = redis_server.port
    redis_server.stop()
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(RedisServerError, match=f"port {port} is in use"):
            redis_server.start()
    assert not redis_server.running


@pytest.mark.redis
def test_startup_failure_reports_log_tail(redis_binary: str) -> None:
    server = RedisServer(redis_binary, extra_args=["--no-such-option", "x"])
    try:
        with pytest.raises(RedisServerError, match="exited with status") as failure:
            server.start()
        assert "no-such-option" in str(failure.value)  # the log tail says what was wrong
        assert not server.running
    finally:
        server.close()


@pytest.mark.redis
def test_sentinel_reports_master(redis_server_factory: RedisServerFactory) -> None:
    master = redis_server_factory()
    sentinel = redis_server_factory.sentinel(master, "mymaster")
    assert sentinel.is_sentinel
    assert sentinel.port != master.port
    with client(sentinel) as conn:
        addr = conn.execute_command("SENTINEL", "get-master-addr-by-name", "mymaster")
    assert [a.decode() if isinstance(a, bytes) else a for a in addr] == [
        "127.0.0.1",
        str(master.port),
    ]


@pytest.mark.rabbitmq
def test_rabbitmq_fixture_reaches_broker(rabbitmq_url: str) -> None:
    assert rabbitmq_reachable(rabbitmq_url)


def test_rabbitmq_unreachable_on_a_closed_port() -> None:
    assert not rabbitmq_reachable(f"amqp://guest:guest@127.0.0.1:{free_port()}/", timeout=1)


def test_require_service_skips_or_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    require_service("present", True, "nothing")
    monkeypatch.delenv("TOWPATH_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="install it with: apt-get install -y x"):
        require_service("x", False, "apt-get install -y x")
    monkeypatch.setenv("TOWPATH_REQUIRE_SERVICES", "1")
    with pytest.raises(
        pytest.fail.Exception, match=r"x is required \(TOWPATH_REQUIRE_SERVICES=1\)"
    ):
        require_service("x", False, "apt-get install -y x")
