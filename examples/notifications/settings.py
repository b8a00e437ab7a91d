"""Settings for the notifications example: the IPC layer (no server needed), or Redis when
``REDIS_URL`` is set (``examples/layer.py``), and its routes. The publish script reads them
too."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere

from examples.layer import channel_layer

CHANNEL_LAYERS = {
    "default": channel_layer("notifications", "examples.notifications.routing:routes")
}
