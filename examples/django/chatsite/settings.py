"""Settings of the chat example: a minimal Django Channels 4 project.

The one line that makes it a towpath project is the ``BACKEND`` of ``CHANNEL_LAYERS``:
towpath's Redis layer instead of ``channels_redis.core.RedisChannelLayer``, with the same
``CONFIG``. Everything else is what the Channels tutorial writes.
"""

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-insecure-example-only")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "channels",
    "chat",
]

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"

# The chat needs no database; a real project keeps its DATABASES here.
DATABASES: dict[str, dict[str, str]] = {}

CHANNEL_LAYERS = {
    "default": {
        # was: "BACKEND": "channels_redis.core.RedisChannelLayer",
        "BACKEND": "towpath.layers.redis.RedisChannelLayer",
        "CONFIG": {
            "hosts": [os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")],
            "capacity": 100,
            "expiry": 60,
        },
    },
}

TIME_ZONE = "UTC"
USE_TZ = True
