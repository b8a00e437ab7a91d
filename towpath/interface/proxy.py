"""Trusted proxy headers: the client address and scheme a proxy in front of us saw.

With ``proxy_headers`` on, a request from a trusted peer (``forwarded_allow_ips``: addresses,
CIDR networks, or ``*``) may say who the client really was. ``X-Forwarded-For`` is walked from
the right: each hop that is itself a trusted proxy is skipped, and the first untrusted address
is the client (a client can prepend whatever it likes, so the leftmost entry is never believed
blindly). ``X-Forwarded-Proto`` sets the scheme. ``Forwarded`` (RFC 7239) is read the same way
when ``X-Forwarded-For`` is absent. A unix-socket peer is a local proxy and is trusted.

Only an IP address becomes the client: a hop that is not one (``evil<script>``, a host name,
RFC 7239's ``unknown`` and ``_obfuscated`` identifiers) ends the walk and the peer's own address
is kept, so nothing but an address reaches ``scope["client"]`` and the access log.
``X-Forwarded-Proto`` is taken only when it says ``http``, ``https``, ``ws`` or ``wss``;
``X-Forwarded-Host`` and ``X-Forwarded-Port`` are not read (the ``Host`` header is the app's).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

__all__ = ["TrustedProxies", "forwarded_client", "trusted_proxies"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """Which peers may set forwarding headers."""

    __slots__ = ("_addresses", "_all", "_networks")

    def __init__(self, allowed: Iterable[str]) -> None:
        self._all = False
        self._addresses: set[str] = set()
        self._networks: list[_Network] = []
        for entry in allowed:
            entry = entry.strip()
            if not entry:
                continue
            if entry == "*":
                self._all = True
            elif "/" in entry:
                try:
                    self._networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    raise ValueError(
                        f"forwarded_allow_ips: {entry!r} is not an address or a CIDR network "
                        "(--forwarded-allow-ips '127.0.0.1,10.0.0.0/8')"
                    ) from None
            else:
                self._addresses.add(entry)

    def __contains__(self, host: object) -> bool:
        if self._all:
            return True
        if not isinstance(host, str):
            return False
        if host in self._addresses:
            return True
        if self._networks:
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                return False
            return any(address in network for network in self._networks)
        return False


@lru_cache(maxsize=1024)
def _valid_ip(value: str) -> str | None:
    """``value`` as an IP address in its usual text form, or None if it is not one."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


@lru_cache(maxsize=8)
def trusted_proxies(allowed: tuple[str, ...]) -> TrustedProxies:
    """The matcher for a config's ``forwarded_allow_ips`` (built once per distinct list)."""
    parts: list[str] = []
    for entry in allowed:
        parts.extend(entry.split(","))
    return TrustedProxies(parts)


def _strip_port(value: str) -> str:
    value = value.strip().strip('"')
    if value.startswith("["):  # [v6]:port
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:  # v4:port
        return value.split(":", 1)[0]
    return value


def _forwarded_pairs(value: str) -> tuple[list[str], str | None]:
    """The ``for=`` hops and the last ``proto=`` of an RFC 7239 ``Forwarded`` header."""
    hops: list[str] = []
    proto = None
    for element in value.split(","):
        for pair in element.split(";"):
            name, _, item = pair.strip().partition("=")
            name = name.lower()
            if name == "for":
                hops.append(_strip_port(item))
            elif name == "proto":
                proto = item.strip().strip('"').lower()
    return hops, proto


def forwarded_client(
    headers: list[tuple[bytes, bytes]],
    peer: tuple[str, int] | None,
    trusted: TrustedProxies,
) -> tuple[tuple[str, int] | None, str | None]:
    """``(client, scheme)`` as forwarded by a trusted peer, or ``(peer, None)`` unchanged.

    ``scheme`` is ``"http"``/``"https"`` (the caller maps it to ``ws``/``wss``), or ``None``
    when no trusted header set it."""
    if peer is not None and peer[0] not in trusted:
        return peer, None
    xff: list[str] = []
    proto: str | None = None
    forwarded: str | None = None
    for name, value in headers:
        if name == b"x-forwarded-for":
            xff.extend(value.decode("latin-1").split(","))
        elif name == b"x-forwarded-proto":
            proto = value.decode("latin-1").split(",")[-1].strip().lower()
        elif name == b"forwarded":
            text = value.decode("latin-1")
            forwarded = text if forwarded is None else f"{forwarded},{text}"
    hops = [_strip_port(hop) for hop in xff]
    if not hops and forwarded is not None:
        hops, forwarded_proto = _forwarded_pairs(forwarded)
        proto = proto or forwarded_proto
    client = peer
    if hops:
        chosen = None
        for hop in reversed([hop for hop in hops if hop]):
            # not an address (RFC 7239's "unknown", "_obfuscated", or junk): keep the peer
            chosen = _valid_ip(hop)
            if chosen is None or chosen not in trusted:
                break
        if chosen is not None:
            client = (chosen, 0)
    if proto not in ("http", "https", "ws", "wss"):
        proto = None
    elif proto in ("ws", "wss"):
        proto = "https" if proto == "wss" else "http"
    return client, proto
