"""ChannelsLiveServerTestCase with towpath's layer, run as a script by
tests/layers/test_dropin_peers.py with a Redis URL and a scratch directory (Django's settings are
per process).

The test case serves the app under daphne in a child process; a ``group_send`` from the test
process reaches the consumer there through Redis. Prints what the WebSocket client heard.
"""
# ruff: noqa: E402 - Django must be configured before Channels is imported

import os
import sys
import unittest

import django
from django.conf import settings

URL, DIRECTORY = sys.argv[1], sys.argv[2]
settings.configure(
    INSTALLED_APPS=["channels"],
    ALLOWED_HOSTS=["localhost"],
    ASGI_APPLICATION="__main__.application",
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.path.join(DIRECTORY, "db.sqlite3"),
            "TEST": {"NAME": os.path.join(DIRECTORY, "test.sqlite3")},
        }
    },
    CHANNEL_LAYERS={
        "default": {
            "BACKEND": "towpath.layers.redis.RedisChannelLayer",
            "CONFIG": {"hosts": [URL]},
        }
    },
)
django.setup()

from asgiref.sync import async_to_sync
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from channels.routing import ProtocolTypeRouter, URLRouter
from channels.testing import ChannelsLiveServerTestCase
from django.urls import path
from websockets.sync.client import connect


class Room(AsyncWebsocketConsumer):
    groups = ["live-room"]

    async def connect(self):
        await self.accept()

    async def chat_message(self, event):
        await self.send(text_data=event["text"])


application = ProtocolTypeRouter({"websocket": URLRouter([path("ws/", Room.as_asgi())])})


class Live(ChannelsLiveServerTestCase):
    serve_static = False

    def test_group_send_from_the_test_reaches_the_server_process(self):
        with connect(self.live_server_ws_url + "/ws/", open_timeout=10) as websocket:
            group_send = async_to_sync(get_channel_layer().group_send)
            group_send("live-room", {"type": "chat.message", "text": "across processes"})
            print("HEARD", websocket.recv(timeout=10))


unittest.main(argv=["live"], verbosity=0)
