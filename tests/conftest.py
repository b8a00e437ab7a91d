"""Shared fixtures: real services (see towpath/testing/services.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from towpath.testing.services import (
    RABBITMQ_INSTALL_HINT,
    REDIS_INSTALL_HINT,
    RedisServer,
    RedisServerFactory,
    find_redis_server,
    rabbitmq_reachable,
    rabbitmq_url_from_env,
    require_service,
)


@pytest.fixture
def redis_server_factory() -> Iterator[RedisServerFactory]:
    """Call it to start a fresh redis-server; ``.sentinel(master)`` starts a Sentinel.

    Every server it made is killed at teardown, whatever state the test left it in.
    """
    binary = find_redis_server()
    require_service("redis-server", binary is not None, REDIS_INSTALL_HINT)
    with RedisServerFactory(binary) as factory:
        yield factory


@pytest.fixture
def redis_server(redis_server_factory: RedisServerFactory) -> RedisServer:
    """One started redis-server on a free loopback port, for this test only."""
    return redis_server_factory()


@pytest.fixture
def rabbitmq_url() -> str:
    """URL of a reachable RabbitMQ (``$RABBITMQ_URL``); skips or fails when there is none."""
    url = rabbitmq_url_from_env()
    require_service(f"RabbitMQ at {url}", rabbitmq_reachable(url), RABBITMQ_INSTALL_HINT)
    return url
