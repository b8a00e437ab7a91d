"""Workers: receive from the routed channels of a channel layer and run consumers.

``Worker(layer, routing)`` (or ``Worker(layer, app=asgi_app)``) is what ``towpath runworker``
runs; ``docs/worker.md`` describes its behaviour.
"""

from towpath.worker.channels import WorkerConfigError, filter_channels
from towpath.worker.host import LifespanFailure
from towpath.worker.loop import Worker

__all__ = ["LifespanFailure", "Worker", "WorkerConfigError", "filter_channels"]
