"""towpath: run ASGI applications as a decoupled stack of interface servers, channel layers and
workers, or in-process as an ordinary ASGI 3 server."""

__version__ = "0.1.0"

__all__ = ["__version__"]
