"""The HTTP/2 client side of the sans-IO protocol tests
(``tests/interface/protocol/test_protocol_h2*.py``): an h2 client-side connection on the other
end of a :class:`~towpath.testing.memory_io.MemoryIO`, that makes the frames and parses the
answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from h2.config import H2Configuration
from h2.connection import H2Connection as H2Client
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from h2.settings import SettingCodes
from hyperframe.frame import GoAwayFrame

from towpath.compat import h2_reopen_after_goaway
from towpath.interface.config import ServerConfig
from towpath.interface.protocol.base import ServerContext
from towpath.interface.protocol.h2 import H2Connection
from towpath.testing.memory_io import MemoryIO

__all__ = ["WS_CONNECT", "App", "Client", "Response", "connect", "settled"]

App = Any

#: the extended CONNECT of a WebSocket over HTTP/2 (RFC 8441)
WS_CONNECT = [
    (":method", "CONNECT"),
    (":protocol", "websocket"),
    (":scheme", "http"),
    (":authority", "a"),
    (":path", "/"),
    ("sec-websocket-version", "13"),
]


@dataclass
class Response:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    trailers: dict[bytes, bytes] = field(default_factory=dict)
    ended: bool = False
    reset: ErrorCodes | None = None

    @property
    def status(self) -> int:
        return int(self.headers[b":status"])


async def settled(io: MemoryIO) -> None:
    """Until what the server queued this turn was written (h2 flushes once per loop turn)."""
    await io.run_until(lambda: "flush" not in io.timers)


class Client:
    """An h2 client on the other side of a MemoryIO."""

    def __init__(self, io: MemoryIO, *, auto_ack: bool = True, **settings: int) -> None:
        self.io = io
        self.h2 = H2Client(config=H2Configuration(client_side=True, header_encoding=None))
        if settings:
            self.h2.local_settings.update(
                {getattr(SettingCodes, name.upper()): value for name, value in settings.items()}
            )
        self.auto_ack = auto_ack
        self.responses: dict[int, Response] = {}
        self.goaway: ConnectionTerminated | None = None

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.io.feed(data)

    def read(self) -> None:
        """Parse what the server wrote; acknowledge received data (if ``auto_ack``)."""
        data = self.io.take()
        events = []
        while data:  # frame by frame, so that frames after a GOAWAY can still be read
            size = 9 + int.from_bytes(data[:3], "big")
            events += self.h2.receive_data(data[:size])
            if data[3] == GoAwayFrame.type:
                # h2 refuses everything after a GOAWAY; HTTP/2 lets open streams finish
                h2_reopen_after_goaway(self.h2)
            data = data[size:]
        for event in events:
            if isinstance(event, ResponseReceived):
                self.response(event.stream_id).headers.update(event.headers)
            elif isinstance(event, DataReceived):
                self.response(event.stream_id).body += event.data
                if self.auto_ack:
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, TrailersReceived):
                self.response(event.stream_id).trailers.update(event.headers)
            elif isinstance(event, StreamEnded):
                self.response(event.stream_id).ended = True
            elif isinstance(event, StreamReset):
                self.response(event.stream_id).reset = event.error_code
            elif isinstance(event, ConnectionTerminated):
                self.goaway = event
        if not self.io.closed:
            self.flush()

    def response(self, stream_id: int) -> Response:
        return self.responses.setdefault(stream_id, Response())

    def request(
        self,
        method: str = "GET",
        path: str = "/",
        body: bytes | None = None,
        headers: list[tuple[str, str]] | None = None,
        end: bool = True,
    ) -> int:
        stream_id = self.h2.get_next_available_stream_id()
        head = self.head(method, path, headers)
        self.h2.send_headers(stream_id, head, end_stream=end and body is None)
        if body is not None:
            size = self.h2.max_outbound_frame_size
            for start in range(0, len(body), size):
                self.h2.send_data(stream_id, body[start : start + size])
            if end:
                self.h2.end_stream(stream_id)
        self.flush()
        return stream_id

    def head(
        self, method: str = "GET", path: str = "/", headers: list[tuple[str, str]] | None = None
    ) -> list[tuple[str, str]]:
        """A request's header list, pseudo-headers first."""
        return [
            (":method", method),
            (":scheme", "https"),
            (":authority", "example.com"),
            (":path", path),
            *(headers or []),
        ]

    async def until(self, condition: Any) -> None:
        def check() -> bool:
            self.read()
            return bool(condition())

        await self.io.run_until(check)


def connect(
    app: App, *, window: int | None = None, write_high_water: int | None = None, **config: Any
) -> tuple[MemoryIO, H2Connection, Client]:
    """A server connection for ``app`` (``config``: ``ServerConfig`` settings) and a client that
    sent its preface and read the server's. ``window``: the client opens its stream and
    connection windows that far. ``write_high_water``: the MemoryIO pauses the server's writing
    past that many unread bytes (``io.take()`` resumes it)."""
    io = MemoryIO(app, write_high_water=write_high_water)
    context = ServerContext(ServerConfig(**config))
    connection = H2Connection(io, context)
    io.attach(connection)
    client = Client(io)
    client.h2.initiate_connection()
    if window is not None:
        client.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: window})
        client.h2.increment_flow_control_window(window - 65535)
    client.flush()
    client.read()
    return io, connection, client
