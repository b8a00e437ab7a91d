"""The errors a misconfiguration raises, one family for every process role.

Every config object (``ServerConfig``, ``WorkerConfig``, ``ForwardingSettings``, a layer's
``LayerOptions``) raises a subclass of :class:`ConfigError` naming the setting at fault in
``field``; the CLI maps the class and that field to the option to blame and the exit status,
never the message text. Exception tree::

    ValueError
     +-- ConfigError                  a setting is invalid; ``field`` names it, ``option`` may
          |                           name the CLI flag that sets it
          +-- ServerConfigError       towpath.interface.config.ServerConfig (and --bind)
          +-- WorkerConfigError       towpath.worker.config.WorkerConfig, the routing's channels
          +-- ForwardingConfigError   towpath.interface.forwarding.settings.ForwardingSettings
          +-- LayerOptionError        towpath.layers.base.LayerOptions; also
                                      InvalidChannelLayerError (a ChannelLayerError)

This module imports nothing of towpath's, so both halves of a decoupled stack (and the layers)
may use it.
"""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A setting is invalid; the message says why and what it accepts.

    ``field`` is the setting's name in its config object (``None`` when no one setting is at
    fault, as for "routing or an ASGI app, not both"); ``option`` is the CLI flag when the
    raiser knows it better than the config field (a CLI maps ``field`` otherwise)."""

    field: str | None
    option: str | None

    def __init__(self, message: str, *, field: str | None = None, option: str | None = None):
        super().__init__(message)
        self.field = field
        self.option = option
