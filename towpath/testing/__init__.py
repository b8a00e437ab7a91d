"""Test helpers that ship with towpath: the layer conformance suite and real-service fixtures.

``from towpath.testing import ChannelLayerConformance`` runs towpath's own layer tests against
any layer class. Needs pytest and pytest-asyncio (``pip install 'towpath[dev]'``).
"""

from towpath.testing.conformance import ChannelLayerConformance

__all__ = ["ChannelLayerConformance"]
