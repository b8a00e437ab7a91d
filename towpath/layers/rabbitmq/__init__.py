"""The RabbitMQ channel layer (``pip install 'towpath[rabbitmq]'``); see docs/rabbitmq.md."""

from towpath.layers.rabbitmq.core import DEFAULT_URL, RabbitMQChannelLayer, RabbitMQStats

__all__ = ["DEFAULT_URL", "RabbitMQChannelLayer", "RabbitMQStats"]
