"""Settings for running the chat decoupled (`towpath serve` + `towpath runworker`): the IPC
layer (no server needed), or Redis when ``REDIS_URL`` is set (``examples/layer.py``), and the
chat's routes. ``runserver`` needs none of this (it uses the in-memory layer)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere

from examples.layer import channel_layer

CHANNEL_LAYERS = {"default": channel_layer("chat", "examples.chat.routing:routes")}
