"""Settings for the WSGI example: one layer shared by `towpath serve --settings` and the
workers (the IPC layer, or Redis when ``REDIS_URL`` is set: ``examples/layer.py``), and the
routing that sends HTTP to Flask and WebSockets to the chat consumer.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere

from examples.layer import channel_layer

CHANNEL_LAYERS = {"default": channel_layer("wsgi", "examples.wsgi.routing:routes")}
