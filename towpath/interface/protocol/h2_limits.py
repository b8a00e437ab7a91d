"""What one HTTP/2 connection lets a client cost: flood accounting and header-list limits.

h2 is sans-IO and rate-limits nothing, yet some frames are cheap to send and costly to answer.
The worst is the "Rapid Reset" attack (CVE-2023-44487): HEADERS then RST_STREAM at once, again
and again, so every request starts an application and none counts against
``SETTINGS_MAX_CONCURRENT_STREAMS``. The older floods (CVE-2019-9512 PING, -9515 SETTINGS,
-9518 empty frames) make the server answer or work for nothing. :class:`FloodGuard` counts
them per connection in two token buckets, as nghttp2 does (its stream-reset limiter and its
"glitch" limiter both default to a burst of 1000 and 33 a second):

* **resets**: every RST_STREAM from the client, and every stream h2 resets for an error the
  client made on it (an overflowing WINDOW_UPDATE, DATA after its END_STREAM: "MadeYouReset",
  CVE-2025-8671, resets streams through the server instead);
* **control frames**: PING, SETTINGS, SETTINGS ACK and PING ACK nobody asked for, PRIORITY
  (outside a HEADERS), DATA that carries nothing and ends nothing, frames of unknown types,
  and requests the server had to refuse (malformed, header list over the limits).

A legitimate client spends a handful; one past a bucket's burst and its refill gets
``GOAWAY(ENHANCE_YOUR_CALM)`` and the connection is closed (``h2_reset_burst``,
``h2_resets_per_second``, ``h2_control_frame_burst``, ``h2_control_frames_per_second``).

:func:`header_list_problem` checks a decoded request header list against ``max_header_bytes``
(counted as ``SETTINGS_MAX_HEADER_LIST_SIZE`` is, RFC 9113 6.5.2: name and value octets plus 32
per field) and ``max_header_count``; the caller answers 431 on that stream only. HPACK must still
decode the whole block to keep its table in step, so the decoder itself stops only at
:func:`decoder_limit` (twice the limit): past that, h2 ends the connection with
``GOAWAY(ENHANCE_YOUR_CALM)``, the answer to a decompression bomb.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from towpath.interface.config import ServerConfig

__all__ = ["FloodGuard", "TokenBucket", "decoder_limit", "header_list_problem"]

#: RFC 9113 6.5.2: each field counts 32 octets beyond its name and value
FIELD_OVERHEAD = 32


class TokenBucket:
    """``burst`` tokens to start with and at most, ``rate`` more each second of ``clock``;
    :meth:`take` spends one."""

    __slots__ = ("_clock", "_last", "_tokens", "burst", "rate")

    def __init__(
        self, burst: int, rate: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst = burst
        self.rate = rate
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def take(self) -> bool:
        """Spend a token: False when none is left (the caller is over its rate)."""
        now = self._clock()
        tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True

    def __repr__(self) -> str:
        return f"<TokenBucket {self._tokens:.1f}/{self.burst} +{self.rate}/s>"


class FloodGuard:
    """The two buckets of one connection; each method is False once the client went past
    its bucket (answer ``GOAWAY(ENHANCE_YOUR_CALM)``)."""

    __slots__ = ("_control", "_resets")

    def __init__(self, config: ServerConfig, clock: Callable[[], float] = time.monotonic):
        self._resets = TokenBucket(config.h2_reset_burst, config.h2_resets_per_second, clock)
        self._control = TokenBucket(
            config.h2_control_frame_burst, config.h2_control_frames_per_second, clock
        )

    def reset(self) -> bool:
        """The client reset a stream."""
        return self._resets.take()

    def control_frame(self) -> bool:
        """The client sent a frame that costs us and gives nothing (see the module doc)."""
        return self._control.take()


def header_list_problem(fields: list[tuple[bytes, bytes]], config: ServerConfig) -> str | None:
    """Why a request header list is over the limits, or None. Its size counts every field;
    the count leaves out the pseudo-headers (as HTTP/1.1 has no such lines)."""
    size = FIELD_OVERHEAD * len(fields)
    pseudo = 0
    for name, value in fields:
        size += len(name) + len(value)
        if name[:1] == b":":
            pseudo += 1
    if size > config.max_header_bytes:
        return f"a header list of {size} bytes, over max_header_bytes={config.max_header_bytes}"
    count = len(fields) - pseudo
    if count > config.max_header_count:
        return f"{count} header fields, over max_header_count={config.max_header_count}"
    return None


def decoder_limit(config: ServerConfig) -> int:
    """Where HPACK decoding itself stops (the connection then ends): twice
    ``max_header_bytes``, so a list a little over the limit gets its 431 and the connection
    goes on, while a block that inflates without bound is cut early."""
    return 2 * config.max_header_bytes
