"""``channels_redis.utils``: private helpers of channels_redis, with no towpath counterpart."""

from channels_redis import _missing

_consistent_hash = _missing(
    "utils._consistent_hash", "towpath shards with jump consistent hashing (hosts.shard_for)"
)
_close_redis = _missing(
    "utils._close_redis", "it closes a private redis-py client of channels_redis's shards"
)
