"""``channels_redis.serializers``: channels_redis's serializer classes and registry.

towpath's layers take ``serializer_format`` ("msgpack" or "json") and
``symmetric_encryption_keys`` as channels_redis's do, but have no registry of custom serializer
classes and no random prefix in front of each message (towpath.layers.serializers).
"""

from channels_redis import _missing

_WHY = "towpath has no serializer registry; its layers take serializer_format='msgpack'|'json'"

JSONSerializer = _missing("serializers.JSONSerializer", _WHY)
MsgPackSerializer = _missing("serializers.MsgPackSerializer", _WHY)
SerializerDoesNotExist = _missing("serializers.SerializerDoesNotExist", _WHY)
SerializersRegistry = _missing("serializers.SerializersRegistry", _WHY)
registry = _missing("serializers.registry", _WHY)
