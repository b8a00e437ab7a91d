"""What the forwarding app did, counted as it happens."""

from __future__ import annotations

import dataclasses

__all__ = ["ForwardingStats"]


@dataclasses.dataclass(slots=True)
class ForwardingStats:
    """What the forwarding app did, counted as it happens (plain ints: read them for metrics)."""

    #: ``http.request`` messages sent (one per request forwarded)
    http_requests: int = 0
    #: body chunks sent on request channels after the first message
    http_body_chunks: int = 0
    #: ``http.disconnect`` messages sent (client gone before its response completed)
    http_disconnects: int = 0
    #: 503 answers: ``http.request`` full; the layer failing; no response start in time
    http_503_full: int = 0
    http_503_layer: int = 0
    http_503_timeout: int = 0
    #: 413 answers (body over ``max_body_bytes``)
    http_413: int = 0
    #: 502 answers (a reply that is not a valid ASGI event at that point)
    http_502: int = 0
    #: responses a worker abandoned with ``towpath.abort`` (the client's connection is reset)
    http_aborts: int = 0
    websocket_connects: int = 0
    websocket_messages: int = 0
    websocket_disconnects: int = 0
    #: WebSocket handshakes denied 503: ``websocket.connect`` full; the layer failing; no
    #: answer in time
    websocket_503_full: int = 0
    websocket_503_layer: int = 0
    websocket_503_timeout: int = 0
    #: sockets closed 1013 because ``websocket.receive`` was full
    websocket_1013: int = 0
    #: sockets closed 1013 because their client left more output unread than
    #: ``ws_output_limit_bytes`` allows (``towpath.interface.slow_clients``)
    websocket_1013_slow: int = 0
    #: workers declared gone (no heartbeat for ``heartbeat_timeout_seconds``) while they had
    #: connections here
    workers_lost: int = 0
    #: WebSockets re-dispatched as a resumed connect (owner gone, or handed back)
    websocket_redispatched: int = 0
    #: ``towpath.handback`` messages taken from a connection's owner
    websocket_handbacks: int = 0
    #: HTTP requests answered 503 because the worker handling them was gone
    http_503_worker_lost: int = 0
    #: resumed WebSockets closed 1013: more than ``HELD_FRAMES_MAX`` frames held
    websocket_1013_held_overflow: int = 0
    #: client frames sent to a worker that was then declared gone, which its heartbeats never
    #: reported as taken by the app: an upper bound of the frames lost with it
    websocket_frames_maybe_lost: int = 0
    #: handbacks whose old owner did not say ``towpath.released`` within
    #: ``heartbeat_timeout_seconds`` of the new owner's accept: its held output was let out
    #: without the old owner's last word (order across the two owners not guaranteed)
    websocket_handback_timeouts: int = 0
    #: re-dispatched WebSockets whose resumed connect no worker answered in time: closed 1013
    websocket_resume_timeouts: int = 0
    #: requests and WebSocket connects no worker took within ``untaken_warning_seconds``
    #: (``towpath.interface.untaken``)
    untaken_requests: int = 0
    #: times "no worker is taking requests" was logged (once per outage)
    no_worker_outages: int = 0
    #: times "requests are waiting" was logged: untaken while workers were busy here
    waiting_episodes: int = 0
    #: protocol messages (disconnect notices, resumed connects, handback ends, heartbeat
    #: acks) that found their channel full and were retried (``towpath.interface.delivery``)
    protocol_sends_delayed: int = 0
    #: of those, given up after ``protocol_send_timeout_seconds``
    protocol_sends_failed: int = 0
    #: ``websocket.send`` output dropped because the worker that sent it is not the
    #: connection's owner (a worker declared gone that was alive after all)
    websocket_output_not_owner: int = 0
    #: times this server found it had itself been stalled (its sweep woke late): the workers'
    #: silence during the stall was not held against them
    server_stalls: int = 0
    #: the longest time, in ms, between two heartbeats of one worker as this server read them
    #: (the workers' interval plus how late they were read: heartbeats queued behind output)
    heartbeat_gap_max_ms: int = 0
