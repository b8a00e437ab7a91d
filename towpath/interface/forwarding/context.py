"""What an exchange may use of the forwarding app: an explicit context, not the app.

The app (``towpath.interface.forwarding``) builds one :class:`ExchangeContext` and hands it to
every exchange; nothing here or in the exchanges imports the app back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from towpath.interface.delivery import ProtocolSends
from towpath.interface.forwarding.affinity import Affinity
from towpath.interface.forwarding.settings import ForwardingSettings
from towpath.interface.forwarding.stats import ForwardingStats
from towpath.interface.slow_clients import SlowClients
from towpath.interface.untaken import UntakenRequests
from towpath.layers.base import BaseChannelLayer

__all__ = ["ExchangeContext"]


@dataclasses.dataclass(frozen=True, slots=True)
class ExchangeContext:
    """The app's parts an exchange works with, shared by every exchange of one app."""

    layer: BaseChannelLayer
    settings: ForwardingSettings
    stats: ForwardingStats
    affinity: Affinity
    #: protocol messages that find their channel full are retried (``towpath.interface.delivery``)
    protocol: ProtocolSends
    slow_clients: SlowClients
    untaken: UntakenRequests
    #: the scope as it travels (the app caches the server's shared ``extensions``)
    scope_to_wire: Callable[[MutableMapping[str, Any]], dict[str, Any]]
    #: the app's control channel, made on first use; raises the layer's error
    control_channel: Callable[[], Awaitable[str]]
    #: log a layer failure (once per outage) / the layer works again
    layer_failed: Callable[[str, BaseException | None], None]
    layer_works: Callable[[], None]
