"""``channels_redis.serializers``: the registry API maps to towpath's
(``towpath.layers.serializers.registry``: ``register_serializer``, ``get_serializer``,
``SerializerDoesNotExist``). towpath's serializer classes take no ``random_prefix_length`` (no
random prefix in front of each message) and no ``symmetric_encryption_keys`` (the layer wraps
any serializer in its encryption), so the tests of those are left out."""

from towpath.layers.serializers import (
    JSONSerializer,
    MsgPackSerializer,
    SerializerDoesNotExist,
    SerializersRegistry,
    registry,
)

__all__ = [
    "JSONSerializer",
    "MsgPackSerializer",
    "SerializerDoesNotExist",
    "SerializersRegistry",
    "registry",
]
