"""Which origins a WebSocket handshake may come from: the patterns of ``--ws-allowed-origins``
(checked by the interface server) and of :class:`towpath.consumers.OriginValidator` (checked by
the app), in one place.

A browser sends ``Origin`` with every WebSocket handshake, and a page on any site may open a
WebSocket to yours with the user's cookies (cross-site WebSocket hijacking): refusing foreign
origins is the defence, as Channels' ``OriginValidator`` does. Patterns, as Channels writes them:

- ``*``: any origin (and a missing one);
- ``https://example.com``, ``http://localhost:8000``: that scheme, host and port (a missing port
  is the scheme's default: 80 for http, 443 for https);
- ``example.com``, ``localhost:8000``: that host (and port, when given) under any scheme;
- ``.example.com``: ``example.com`` and every subdomain of it (``https://.example.com`` for
  https only);
- ``null``: the literal ``Origin: null`` of sandboxed frames and ``file:`` pages.

Unlike Channels, a scheme-less pattern with a port (``localhost:8000``) requires that port.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import SplitResult, urlsplit

__all__ = ["OriginPatterns", "parse_origin"]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _host_matches(host: str, pattern: str) -> bool:
    if pattern.startswith("."):
        return host == pattern[1:] or host.endswith(pattern)
    return host == pattern


def _port(parts: SplitResult) -> int | None:
    """The explicit port, else the scheme's default (None for neither); ValueError if bad."""
    port = parts.port  # raises ValueError for a non-number or one out of range
    if port is None:
        port = _DEFAULT_PORTS.get(parts.scheme)
    return port


def parse_origin(value: str) -> tuple[str, str, int | None] | None:
    """``(scheme, host, port)`` of an ``Origin`` header value, lower-cased, or None when it is
    not ``scheme://host[:port]`` (``null`` included)."""
    try:
        parts = urlsplit(value.strip().lower())
        host = parts.hostname
        if not parts.scheme or not host or parts.path not in ("", "/") or parts.query:
            return None
        return parts.scheme, host, _port(parts)
    except ValueError:
        return None


class OriginPatterns:
    """A compiled list of origin patterns (see the module docstring). ``ValueError`` names a
    pattern that is not one."""

    __slots__ = ("_any", "_null", "_patterns", "patterns")

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        self._any = False
        self._null = False
        #: (scheme or None, host pattern, port or None)
        self._patterns: list[tuple[str | None, str, int | None]] = []
        for raw in self.patterns:
            pattern = raw.strip().lower()
            if pattern == "*":
                self._any = True
                continue
            if pattern == "null":
                self._null = True
                continue
            has_scheme = "://" in pattern
            try:
                parts = urlsplit(pattern if has_scheme else "//" + pattern)
                host = parts.hostname
                port = _port(parts) if has_scheme else parts.port
            except ValueError:
                host = None
            if not host or parts.path not in ("", "/") or parts.query or parts.username:
                raise ValueError(
                    f"{raw!r} is not an origin pattern: write 'https://example.com', "
                    "'example.com', '.example.com' (and subdomains) or '*'"
                )
            self._patterns.append((parts.scheme if has_scheme else None, host, port))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __repr__(self) -> str:
        return f"OriginPatterns({list(self.patterns)!r})"

    def allows(self, origin: str | None, *, allow_missing: bool) -> bool:
        """Whether ``origin`` (the ``Origin`` header value, None when absent) matches;
        ``allow_missing``: what an absent header gets (``*`` allows it anyway)."""
        if self._any:
            return True
        if origin is None:
            return allow_missing
        if origin.strip().lower() == "null":
            return self._null
        parsed = parse_origin(origin)
        if parsed is None:
            return False
        scheme, host, port = parsed
        for pattern_scheme, pattern_host, pattern_port in self._patterns:
            if pattern_scheme is not None and pattern_scheme != scheme:
                continue
            if pattern_port is not None and pattern_port != port:
                continue
            if _host_matches(host, pattern_host):
                return True
        return False
