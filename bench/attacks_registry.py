"""The attacks of ``python -m bench attacks`` (``bench/attacks.py`` runs and measures them):
one :class:`Attack` each, grouped as issue 17 lists them, with what a sound server answers.
The clients are in ``bench/attacks_h2.py``, ``attacks_http.py``, ``attacks_ws.py`` and
``attacks_decoupled.py``."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from bench import attacks_decoupled, attacks_h2, attacks_http, attacks_ws
from bench.attacks_base import MIB, Outcome

__all__ = ["ATTACKS", "PROXY_FLAGS", "Attack"]

#: the option each server family has for trusting proxy headers (from 127.0.0.1)
PROXY_FLAGS = {
    "towpath": "--proxy-headers",
    "uvicorn": "--proxy-headers",
    "daphne": "--proxy-headers",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Attack:
    """One attack: ``run(target, options)``; ``title`` and ``expect`` are formatted with the
    options (sizes); ``needs``: the protocol a server must speak (``h2``, ``http1``, ``ws``,
    ``decoupled``)."""

    name: str
    group: str
    title: str
    expect: str
    needs: str
    run: Callable[[Any, argparse.Namespace], Outcome]
    flags: Mapping[str, str] = dataclasses.field(default_factory=dict)
    fd_limit: bool = False

    def describe(self, options: argparse.Namespace) -> str:
        return self.title.format(**vars(options))


def _attacks() -> list[Attack]:
    h2, http, ws, dec = attacks_h2, attacks_http, attacks_ws, attacks_decoupled
    g1 = "1. HTTP/2: huge flow-control windows, a client that never reads"
    g2 = "2. HTTP/2 Rapid Reset"
    g3 = "3. HTTP/2 PING and SETTINGS floods, never read"
    g4 = "4. HTTP/1.1 request smuggling"
    g5 = "5. Oversized request heads in one write"
    g7 = "7. WebSocket compression and UTF-8"
    g11 = "11. Bad request lines and chunk sizes"
    g12 = "12. Decoupled towpath: malformed layer entries, a Redis outage"
    bounded = "RSS bounded (back-pressure), others served"
    # fmt: off
    attacks = [
        Attack(
            "h2-window-big", g1, "one {h2_big_mib} MiB response, not read for {hold:g} s",
            bounded, "h2", lambda t, o: h2.window(t, o, 1, o.h2_big_mib * MIB),
        ),
        Attack(
            "h2-window-streams", g1,
            "{h2_streams} streams of {h2_stream_mib} MiB, not read for {hold:g} s",
            bounded, "h2", lambda t, o: h2.window(t, o, o.h2_streams, o.h2_stream_mib * MIB),
        ),
        Attack(
            "h2-rapid-reset", g2, "HEADERS + RST_STREAM pairs for {flood_seconds:g} s",
            "GOAWAY (ENHANCE_YOUR_CALM) soon, little CPU", "h2", h2.rapid_reset,
        ),
        Attack(
            "h2-ping-flood", g3, "PING frames for {flood_seconds:g} s, never reading",
            "stops reading or GOAWAY; RSS bounded", "h2", lambda t, o: h2.flood(t, o, "ping"),
        ),
        Attack(
            "h2-settings-flood", g3, "SETTINGS frames for {flood_seconds:g} s, never reading",
            "stops reading or GOAWAY; RSS bounded", "h2",
            lambda t, o: h2.flood(t, o, "settings"),
        ),
        Attack(
            "smuggle-cl-te", g4,
            "Content-Length + Transfer-Encoding: chunked, a GET /hidden in the body",
            "400, or an answer and close: hidden not served", "http1", http.smuggle_cl_te,
        ),
        Attack(
            "smuggle-dup-cl", g4, "Content-Length: 0 and Content-Length: N, a GET /hidden after",
            "400, hidden not served", "http1", http.smuggle_dup_cl,
        ),
        *(
            Attack(
                f"head-{which}", g5, text, "431 (or 414 / 400), others served", "http1",
                lambda t, o, which=which: http.head(t, o, which),
            )
            for which, (text, _request) in http.HEADS.items()
        ),
        Attack(
            "slowloris", "6. Slowloris",
            "{slowloris_connections} connections, a header byte every {slowloris_interval:g} s "
            "for {slowloris_seconds:g} s",
            "408 or close after the header timeout; others served", "http1", http.slowloris,
        ),
        Attack(
            "ws-deflate-idle", g7,
            "{ws_idle} idle WebSockets with permessage-deflate (one message each)",
            "a few KiB per idle connection", "ws", ws.deflate_idle,
        ),
        Attack(
            "ws-deflate-bomb", g7, "one compressed message inflating to {bomb_mib} MiB",
            "close 1009, RSS bounded", "ws", ws.deflate_bomb,
        ),
        Attack(
            "ws-bad-utf8-text", g7, "a text message that is not UTF-8", "close 1007", "ws",
            lambda t, o: ws.invalid_utf8(t, o, "text"),
        ),
        Attack(
            "ws-bad-utf8-close", g7, "a close frame whose reason is not UTF-8",
            "close 1007 (or 1002)", "ws", lambda t, o: ws.invalid_utf8(t, o, "close"),
        ),
        Attack(
            "ws-origin", "8. Cross-site WebSocket", "handshake with Origin: http://evil.example",
            "403 (not the server's own origin)", "ws", ws.cross_origin,
        ),
        Attack(
            "xff", "9. X-Forwarded-For under proxy headers",
            "X-Forwarded-For: evil<script> from 127.0.0.1 (a trusted proxy)",
            "not an address: ignored (app sees 127.0.0.1) or 400", "http1",
            http.forwarded_for, flags=PROXY_FLAGS,
        ),
        Attack(
            "fd-flood", "10. Connection flood past the fd limit",
            "ulimit -n {fd_limit}, {fd_connections} connections held for {fd_seconds:g} s",
            "little log and CPU; served again after", "http1", http.fd_flood, fd_limit=True,
        ),
        *(
            Attack(
                f"bad-{name}", g11, text, expect, "http1",
                lambda t, o, which=which: http.bad_line(t, o, which),
            )
            for name, which, text, expect in [
                ("http-9.9", "http-9.9", "GET / HTTP/9.9", "505 (or 400)"),
                ("http-2.0", "http-2.0", "GET / HTTP/2.0 over HTTP/1.1", "505 (or 400)"),
                ("chunk-size", "chunk-2^64", "chunk size 2^64 (10000000000000000)", "400"),
            ]
        ),
        *(
            Attack(
                f"decoupled-malformed-{which}", g12,
                f"{text} pushed into {dec.REQUEST_LIST}",
                "next request served, worker alive", "decoupled",
                lambda t, o, which=which: dec.malformed(t, o, which),
            )
            for which, (text, _entry) in dec.MALFORMED.items()
        ),
        Attack(
            "decoupled-redis-outage", g12,
            "{outage_clients} WebSocket echo clients, Redis SIGKILLed for {outage_seconds:g} s",
            "clients stay open, echoes in order, none lost", "decoupled", dec.redis_outage,
        ),
    ]
    # fmt: on
    return attacks


ATTACKS: dict[str, Attack] = {attack.name: attack for attack in _attacks()}
