"""Settings for the jobs example: the IPC layer (no server needed), or Redis when
``REDIS_URL`` is set (``examples/layer.py``), and its routes (the page, the WebSocket and the
``thumbnail`` channel)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere

from examples.layer import channel_layer

CHANNEL_LAYERS = {"default": channel_layer("jobs", "examples.jobs.routing:routes")}
