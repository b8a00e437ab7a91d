"""HTTP/2 sans-IO, what a hostile client may cost: the token buckets (an injected clock), the
flood limits ending in ``GOAWAY(ENHANCE_YOUR_CALM)``, header-list limits answered 431 on one
stream, and bodies held back while the transport is paused (the never-reading client). The
same attacks on a real ``towpath serve`` process: ``tests/interface/test_hostile_h2.py``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import (
    DataFrame,
    PingFrame,
    PriorityFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from tests.support.h2_memory import WS_CONNECT, connect, settled
from towpath.interface.config import ServerConfig, ServerConfigError
from towpath.interface.protocol.h2_limits import FloodGuard, TokenBucket
from towpath.interface.protocol.h2_output import FLUSH_BYTES, QUANTUM_BYTES

MIB = 1024 * 1024


class Clock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def hello(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


def guarded(connection: Any, clock: Clock) -> None:
    """Give ``connection`` flood buckets on ``clock``."""
    connection.flood = FloodGuard(connection.context.config, clock)


# -- the token bucket -----------------------------------------------------------------------------


def test_a_token_bucket_gives_its_burst_then_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(3, 2.0, clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.now += 0.25  # half a token
    assert not bucket.take()
    clock.now += 0.25  # a whole one (the half above was kept)
    assert bucket.take()
    assert not bucket.take()


def test_a_token_bucket_refills_no_higher_than_its_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(3, 10.0, clock)
    assert bucket.take()
    clock.now += 3600
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert "0.0/3" in repr(bucket)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("h2_reset_burst", 0),
        ("h2_resets_per_second", 0),
        ("h2_control_frame_burst", 1.5),
        ("h2_control_frames_per_second", True),
        ("max_header_count", 0),
    ],
)
def test_flood_settings_are_checked(setting: str, value: Any) -> None:
    with pytest.raises(ServerConfigError, match=setting):
        ServerConfig(**{setting: value})


# -- Rapid Reset and control-frame floods ---------------------------------------------------------


async def test_rapid_reset_past_the_burst_is_goaway_enhance_your_calm() -> None:
    clock = Clock()
    io, connection, client = connect(hello, h2_reset_burst=5, h2_resets_per_second=1.0)
    guarded(connection, clock)
    for _ in range(5):
        stream_id = client.request()
        client.h2.reset_stream(stream_id, ErrorCodes.CANCEL)
    client.flush()
    assert not io.closed
    clock.now += 1.0  # one more token
    stream_id = client.request()
    client.h2.reset_stream(stream_id, ErrorCodes.CANCEL)
    client.flush()
    assert not io.closed
    stream_id = client.request()
    client.h2.reset_stream(stream_id, ErrorCodes.CANCEL)
    client.flush()  # the 7th reset within a second: over the rate
    client.read()
    assert client.goaway is not None
    assert client.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert client.goaway.additional_data is not None
    assert b"Rapid Reset" in client.goaway.additional_data
    # nothing more is read, and the connection closes a moment later (so that a client still
    # sending gets the GOAWAY rather than a reset)
    assert not io.reading
    assert not io.closed
    started = len(io.streams)
    client.request()  # were it read anyway: no answer, no app
    assert io.take() == b""
    assert len(io.streams) == started
    io.fire("linger")
    assert io.closed
    assert "abort" in io.timers  # a client that does not take the GOAWAY is cut
    await io.wait_apps()
    assert all(stream.receive() == {"type": "http.disconnect"} for stream in io.streams)


async def test_resets_in_one_read_stop_at_the_limit_and_start_no_more_apps() -> None:
    io, _connection, client = connect(hello, h2_reset_burst=10)
    for _ in range(50):  # all in one data_received
        stream_id = client.h2.get_next_available_stream_id()
        client.h2.send_headers(stream_id, client.head(), end_stream=True)
        client.h2.reset_stream(stream_id, ErrorCodes.CANCEL)
    client.flush()
    client.read()
    assert client.goaway is not None
    assert client.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert len(io.streams) == 11  # the 11th stream opened, its reset was one too many
    await io.wait_apps()


@pytest.mark.parametrize(
    "provoke",
    [
        lambda stream_id: WindowUpdateFrame(stream_id, window_increment=2**31 - 1),
        lambda stream_id: DataFrame(stream_id, b"after END_STREAM"),
    ],
    ids=["window-overflow", "data-after-end"],
)
async def test_streams_the_client_makes_the_server_reset_count_as_resets(provoke: Any) -> None:
    """MadeYouReset (CVE-2025-8671): no RST_STREAM from the client, but frames that make h2
    reset each stream it opened; the same bucket ends it."""
    started = asyncio.Event()

    async def waits(scope: Any, receive: Any, send: Any) -> None:
        started.set()
        while (await receive())["type"] != "http.disconnect":
            pass

    io, _connection, client = connect(waits, h2_reset_burst=5)
    for n in range(6):
        stream_id = client.request()
        io.feed(provoke(stream_id).serialize())
        client.read()
        if n < 5:
            assert client.response(stream_id).reset is not None  # h2's stream error
            assert client.goaway is None
    assert client.goaway is not None
    assert client.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    await io.wait_apps()  # every app learnt its stream was gone


async def test_a_client_under_the_limits_is_never_refused() -> None:
    clock = Clock()
    io, connection, client = connect(
        hello, h2_reset_burst=3, h2_resets_per_second=10.0, h2_control_frame_burst=3
    )
    guarded(connection, clock)
    for _ in range(40):
        clock.now += 0.11  # a reset and a PING every 110 ms: under 10 a second
        stream_id = client.request()
        client.h2.reset_stream(stream_id, ErrorCodes.CANCEL)
        client.h2.ping(b"12345678")
        client.flush()
        client.read()
    assert client.goaway is None
    assert not io.closed
    await io.wait_apps()


@pytest.mark.parametrize(
    ("frame", "what"),
    [
        (PingFrame(0, opaque_data=b"flooding"), b"PingReceived"),
        (PingFrame(0, flags=["ACK"], opaque_data=b"notasked"), b"PingAckReceived"),
        (SettingsFrame(0, settings={SettingCodes.ENABLE_PUSH: 0}), b"SETTINGS"),
        (SettingsFrame(0, flags=["ACK"]), b"SettingsAcknowledged"),
        (PriorityFrame(1, depends_on=0, stream_weight=16), b"PriorityUpdated"),
    ],
    ids=["ping", "ping-ack", "settings", "settings-ack", "priority"],
)
async def test_control_frame_floods_get_goaway_enhance_your_calm(frame: Any, what: bytes) -> None:
    io, _connection, client = connect(hello, h2_control_frame_burst=20)
    for _ in range(30):
        io.feed(frame.serialize())
    answered = bytes(io.written).count(b"flooding")  # PING ACKs carry the PING's data
    client.read()
    assert "linger" in io.timers
    assert client.goaway is not None
    assert client.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert what in (client.goaway.additional_data or b"")
    assert answered <= 20  # once over the limit, nothing more is read nor answered


async def test_an_empty_data_frame_flood_gets_goaway_enhance_your_calm() -> None:
    started = asyncio.Event()

    async def waits(scope: Any, receive: Any, send: Any) -> None:
        started.set()
        await receive()

    io, _connection, client = connect(waits, h2_control_frame_burst=20)
    stream_id = client.request("POST", end=False)
    await started.wait()
    client.read()
    io.feed(DataFrame(stream_id, b"").serialize() * 30)
    client.read()
    assert client.goaway is not None
    assert client.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    await io.wait_apps()


async def test_the_priority_of_a_headers_frame_costs_nothing() -> None:
    io, _connection, client = connect(hello, h2_control_frame_burst=2)
    for _ in range(10):
        stream_id = client.h2.get_next_available_stream_id()
        client.h2.send_headers(
            stream_id, client.head(), end_stream=True, priority_weight=32, priority_depends_on=0
        )
        client.flush()
        await client.until(lambda s=stream_id: client.response(s).ended)
    assert client.goaway is None
    assert not io.closed


# -- header lists ---------------------------------------------------------------------------------


async def test_a_header_list_over_max_header_bytes_is_431_and_the_connection_goes_on() -> None:
    io, _connection, client = connect(hello, max_header_bytes=4096)
    big = client.request(headers=[("x-big", "b" * 5000)])
    await client.until(lambda: client.response(big).ended)
    assert client.responses[big].status == 431
    assert client.goaway is None
    small = client.request()
    await client.until(lambda: client.response(small).ended)
    assert client.responses[small].status == 200
    assert [stream.scope["path"] for stream in io.streams] == ["/"]  # the 431 started no app


async def test_more_header_fields_than_max_header_count_is_431() -> None:
    _io, _connection, client = connect(hello, max_header_count=10)
    at_limit = client.request(headers=[(f"x-{n}", "v") for n in range(10)])
    over = client.request(headers=[(f"x-{n}", "v") for n in range(11)])
    await client.until(lambda: client.response(at_limit).ended and client.response(over).ended)
    assert client.responses[at_limit].status == 200  # pseudo-headers are not counted
    assert client.responses[over].status == 431


async def test_a_header_list_over_twice_the_limit_ends_the_connection() -> None:
    io, _connection, client = connect(hello, max_header_bytes=4096)
    client.request(headers=[("x-big", "b" * 9000)])
    client.read()
    assert io.closed
    assert client.goaway is not None
    assert client.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM


async def test_the_decoder_limit_survives_the_settings_ack() -> None:
    # h2 would set the decoder's limit to the advertised one were it a change the client
    # acknowledged (connect() did acknowledge): a list between it and twice it is still a 431
    io, connection, client = connect(hello, max_header_bytes=4096)
    assert connection.h2.decoder.max_header_list_size == 8192
    big = client.request(headers=[("x-big", "b" * 6000)])
    await client.until(lambda: client.response(big).ended)
    assert client.responses[big].status == 431
    assert not io.closed


# -- bodies and the transport's back-pressure ------------------------------------------------------


async def test_a_client_that_opens_its_windows_and_never_reads_holds_back_the_body() -> None:
    body = bytes(8 * MIB)
    finished = asyncio.Event()

    async def big(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
        finished.set()

    high = 256 * 1024
    io, connection, client = connect(big, window=2**31 - 1, write_high_water=high)
    stream_id = client.request()
    await io.run_until(lambda: io.writing_paused)
    await settled(io)
    for _ in range(20):  # loop turns pass: nothing more is handed over while paused
        await asyncio.sleep(0)
    assert len(io.written) <= high + FLUSH_BYTES + 16 * 1024
    assert not io.reading  # nor is anything read from a client that does not read
    assert not finished.is_set()  # the app's send waits
    assert connection.h2.data_to_send() == b""  # h2 holds nothing either
    # the client reads: the body flows, reading resumes, the app's send returns
    await client.until(lambda: client.response(stream_id).ended)
    assert len(client.responses[stream_id].body) == len(body)
    await io.wait_apps()
    assert finished.is_set()
    assert io.reading


async def test_streams_take_turns_so_one_large_body_does_not_hold_up_the_others() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        size = int(scope["path"][1:])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": bytes(size)})

    _io, _connection, client = connect(app, window=2**31 - 1)
    large = client.request(path=f"/{4 * MIB}")
    small = client.request(path=f"/{QUANTUM_BYTES // 2}")
    # the small one completes while the large one still has most of its body to go
    await client.until(lambda: client.response(small).ended)
    assert len(client.responses[large].body) < 2 * MIB
    await client.until(lambda: client.response(large).ended)
    assert len(client.responses[large].body) == 4 * MIB


async def test_a_paused_transport_holds_every_stream_and_resumes_them_all() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": bytes(MIB)})

    io, _connection, client = connect(app, window=2**31 - 1, write_high_water=64 * 1024)
    streams = [client.request() for _ in range(5)]
    await io.run_until(lambda: io.writing_paused)
    await settled(io)
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(io.written) <= 64 * 1024 + FLUSH_BYTES + 16 * 1024
    await client.until(lambda: all(client.response(s).ended for s in streams))
    assert [len(client.responses[s].body) for s in streams] == [MIB] * 5


async def test_a_connection_closed_while_its_output_is_backed_up_is_cut_later() -> None:
    io, _connection, client = connect(hello)
    io.write_high_water = 10
    client.h2.ping(b"12345678")
    client.flush()  # its PING ACK goes over the mark: the client reads no more
    assert io.writing_paused and not io.reading
    io.fire("keep-alive")  # idle: GOAWAY and close, but nothing drains
    assert io.closed
    io.fire("abort")  # the keep-alive time later
    assert io.aborted


async def test_a_connection_that_closes_normally_is_not_cut() -> None:
    io, _connection, _client = connect(hello)
    io.fire("keep-alive")
    assert io.closed
    assert "abort" not in io.timers


async def test_pings_on_a_websocket_whose_client_does_not_read_close_its_window() -> None:
    """A WebSocket over HTTP/2 answers each ping with a pong; a client that pings and never
    reads would have those queue up without end. Past QUEUED_HOLD_BYTES of them its data is
    no longer acknowledged: its window closes, and it can send nothing more."""
    from wsproto.connection import Connection as WSConnection
    from wsproto.connection import ConnectionType
    from wsproto.events import BytesMessage, Ping

    from towpath.interface.protocol.h2_websocket import QUEUED_HOLD_BYTES

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "bytes": bytes(200_000)})  # over the window
        while (await receive())["type"] != "websocket.disconnect":
            pass

    io, connection, client = connect(app, ws_per_message_deflate=False)
    client.auto_ack = False
    stream_id = client.h2.get_next_available_stream_id()
    client.h2.send_headers(stream_id, WS_CONNECT)
    client.flush()
    await io.run_until(lambda: bool(io.streams) and io.streams[0].blocked)
    await settled(io)
    client.read()  # the 101-like 200 and a window's worth of the message
    channel = connection.streams[stream_id]
    ws = WSConnection(ConnectionType.CLIENT)
    ping = ws.send(Ping(b"p" * 100))  # a masked ping: 106 bytes, a 102-byte pong each
    sent = 0
    while client.h2.local_flow_control_window(stream_id) >= len(ping) and sent < 100_000:
        client.h2.send_data(stream_id, ping)
        client.flush()
        client.read()  # the server's WINDOW_UPDATEs (its DATA is left unacknowledged)
        sent += 1
    assert sent < 100_000  # the client's window closed: the server stopped acknowledging
    # queued: past the mark by at most what one stream window of pings asks for
    queued = channel._queued_bytes
    assert QUEUED_HOLD_BYTES < queued <= QUEUED_HOLD_BYTES + 65535
    # the client reads: the message and every pong arrive, and its window opens again
    client.auto_ack = True
    client.h2.increment_flow_control_window(10_000_000, stream_id)
    client.h2.increment_flow_control_window(10_000_000)
    client.flush()
    response = client.responses[stream_id]
    await client.until(lambda: len(response.body) >= 200_010 + sent * 102)
    ws.receive_data(bytes(response.body))
    events = list(ws.events())
    assert isinstance(events[0], BytesMessage) and len(events[0].data) == 200_000
    assert len(events) == 1 + sent
    assert client.h2.local_flow_control_window(stream_id) > 0
    io.lose()
    await io.wait_apps()
