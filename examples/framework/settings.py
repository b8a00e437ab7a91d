"""Settings for the decoupled run of the FastAPI example: one layer that the interface server
(`towpath serve --settings`) and the workers (`towpath runworker --asgi`) share: the IPC layer
(no server needed), or Redis when ``REDIS_URL`` is set (``examples/layer.py``). No `ROUTING`:
the workers get the app with `--asgi examples.framework.app:app`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere

from examples.layer import channel_layer

CHANNEL_LAYERS = {"default": channel_layer("framework")}
