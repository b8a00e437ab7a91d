"""HTTP/1.1 protocol object, sans-IO over MemoryIO: keep-alive, pipelining, bodies both ways,
100-continue, HEAD, trailers, limits (413/431/400), timers, shutdown, app errors, disconnect."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from towpath.interface.config import ServerConfig
from towpath.interface.protocol import http11
from towpath.interface.protocol.base import ClientDisconnected, Message, ServerContext, Stream
from towpath.interface.protocol.http11 import FIRST_REQUEST_GRACE, HTTP11Connection, HTTP11Stream
from towpath.testing.memory_io import MemoryIO

GET = b"GET /path?q=1 HTTP/1.1\r\nhost: example\r\n\r\n"


def connect(app: Any, context: ServerContext | None = None, **config: Any) -> MemoryIO:
    io = MemoryIO(app)
    if context is None:
        context = ServerContext(ServerConfig(date_header=False, **config))
    io.attach(HTTP11Connection(io, context))
    return io


def split_response(data: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """(status line, lower-cased headers, rest)."""
    head, _, rest = data.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest


async def hello(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-path", b"1")]})
    await send({"type": "http.response.body", "body": scope["path"].encode()})


async def echo(scope: Any, receive: Any, send: Any) -> None:
    """Answers with the whole request body and the number of http.request messages."""
    chunks = []
    while True:
        message = await receive()
        assert message["type"] == "http.request"
        chunks.append(message["body"])
        if not message["more_body"]:
            break
    headers = [(b"x-messages", str(len(chunks)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"".join(chunks)})


async def wait_output(io: MemoryIO, marker: bytes = b"\r\n\r\n") -> None:
    await io.run_until(lambda: marker in io.written)


# -- basics, keep-alive ------------------------------------------------------------------------


async def test_get_answers_with_server_header_length_and_scope() -> None:
    scopes: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(scope)
        assert await receive() == {"type": "http.request", "body": b"", "more_body": False}
        await hello(scope, receive, send)

    io = connect(app)
    io.feed(GET)
    await io.wait_apps()
    status, headers, body = split_response(io.take())
    assert status == b"HTTP/1.1 200 OK"
    assert headers[b"server"] == b"towpath"
    assert headers[b"content-length"] == b"5"
    assert b"date" not in headers
    assert body == b"/path"
    scope = scopes[0]
    assert (scope["method"], scope["path"], scope["query_string"]) == ("GET", "/path", b"q=1")
    assert scope["http_version"] == "1.1"
    assert scope["headers"] == [(b"host", b"example")]
    assert not io.closed
    assert "keep-alive" in io.timers


async def test_date_header_and_app_set_server_header_wins() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"Server", b"mine")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    io = connect(app, context=ServerContext(ServerConfig()))
    io.feed(GET)
    await io.wait_apps()
    data = io.take()
    _, headers, _ = split_response(data)
    assert headers[b"server"] == b"mine"
    assert data.lower().count(b"server:") == 1
    assert headers[b"date"].endswith(b" GMT")


async def test_keep_alive_serves_many_requests_then_idle_timer_closes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(http11, "_monotonic", lambda: now[0])
    io = connect(hello)
    for i in range(3):
        io.feed(f"GET /{i} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
        await io.wait_apps()
        assert io.take().endswith(f"/{i}".encode())
    # armed once at connect, not per request
    assert io.timers == {"keep-alive": 5.0}
    now[0] += 4.0  # the last request ended 4 s ago: the timer fires early and is re-armed
    io.fire("keep-alive")
    assert not io.closed
    assert io.timers == {"keep-alive": pytest.approx(1.0)}
    now[0] += 1.0
    io.fire("keep-alive")
    assert io.closed


async def test_http10_and_connection_close_close_after_the_response() -> None:
    io = connect(hello)
    io.feed(b"GET /a HTTP/1.0\r\n\r\n")
    await io.wait_apps()
    status, headers, body = split_response(io.take())
    assert status == b"HTTP/1.1 200 OK" and body == b"/a"
    assert io.closed

    io = connect(hello)
    io.feed(b"GET /b HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    await io.wait_apps()
    _, headers, _ = split_response(io.take())
    assert headers[b"connection"] == b"close"
    assert io.closed


async def test_pipelined_requests_are_answered_in_order_one_at_a_time() -> None:
    release = asyncio.Event()
    started: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        started.append(scope["path"])
        if scope["path"] == "/0":
            await release.wait()
        await hello(scope, receive, send)

    io = connect(app)
    io.feed(b"".join(f"GET /{i} HTTP/1.1\r\nhost: x\r\n\r\n".encode() for i in range(3)))
    await io.run_until(lambda: bool(started))
    for _ in range(5):
        await asyncio.sleep(0)
    assert started == ["/0"]  # the others wait in h11's buffer
    release.set()
    await io.run_until(lambda: len(started) == 3 and io.written.count(b"HTTP/1.1 200") == 3)
    await io.wait_apps()
    data = io.take()
    assert data.index(b"\r\n\r\n/0") < data.index(b"\r\n\r\n/1") < data.index(b"\r\n\r\n/2")


# the second: an Upgrade the server does not take leaves h11 in MIGHT_SWITCH_PROTOCOL, which
# holds pipelined requests too
@pytest.mark.parametrize("extra", [b"", b"upgrade: foo\r\nconnection: upgrade\r\n"])
async def test_too_many_pipelined_requests_pause_reading_until_the_response(extra: bytes) -> None:
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/0":
            await release.wait()
        await hello(scope, receive, send)

    io = connect(app, max_pipelined_requests=2)
    io.feed(b"GET /0 HTTP/1.1\r\nhost: x\r\n" + extra + b"\r\n")
    io.feed(GET)
    assert io.reading
    io.feed(GET)
    assert not io.reading
    release.set()
    await io.run_until(lambda: io.written.count(b"HTTP/1.1 200") == 3)
    assert io.reading


# -- request bodies ----------------------------------------------------------------------------


async def test_content_length_body_arrives_in_pieces_with_more_body() -> None:
    received: list[Message] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            received.append(message)
            if not message["more_body"]:
                break
        await hello(scope, receive, send)

    io = connect(app)
    io.feed(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 6\r\n\r\nabc")
    await io.run_until(lambda: len(received) == 1)
    assert received[0] == {"type": "http.request", "body": b"abc", "more_body": True}
    assert "body" in io.timers
    io.feed(b"def")
    await io.wait_apps()
    assert received[1] == {"type": "http.request", "body": b"def", "more_body": False}
    assert "body" not in io.timers


async def test_chunked_request_body() -> None:
    io = connect(echo)
    io.feed(b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
    io.feed(b"5\r\nhello\r\n")
    io.feed(b"6\r\n world\r\n0\r\n\r\n")
    await io.wait_apps()
    status, _, body = split_response(io.take())
    assert status == b"HTTP/1.1 200 OK" and body == b"hello world"


async def test_unread_body_pauses_reading_and_receive_resumes_it() -> None:
    gate = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await gate.wait()
        await echo(scope, receive, send)

    io = connect(app)
    io.feed(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 200000\r\n\r\n")
    io.feed(b"a" * 70000)
    assert not io.reading
    assert "body" not in io.timers  # the pause is ours, not the client's
    gate.set()
    await io.run_until(lambda: io.reading)
    io.feed(b"a" * 130000)
    await io.wait_apps()
    assert len(split_response(io.take())[2]) == 200000


async def test_expect_100_continue_only_when_the_app_reads() -> None:
    gate = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await gate.wait()
        await echo(scope, receive, send)

    io = connect(app)
    io.feed(b"POST / HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 4\r\n\r\n")
    for _ in range(5):
        await asyncio.sleep(0)
    assert io.written == b""
    assert "body" not in io.timers
    gate.set()
    await io.run_until(lambda: bool(io.written))
    assert io.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    io.feed(b"data")
    await io.wait_apps()
    assert split_response(io.take())[2] == b"data"


async def test_expect_100_continue_refused_without_reading_closes_after() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 401, "headers": []})
        await send({"type": "http.response.body", "body": b"no"})

    io = connect(app)
    io.feed(b"POST / HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 4\r\n\r\n")
    await io.wait_apps()
    status, headers, body = split_response(io.take())
    assert status == b"HTTP/1.1 401 Unauthorized" and body == b"no"
    assert headers[b"connection"] == b"close"
    assert io.closed


async def test_max_body_bytes_from_content_length_is_413_before_the_app_runs() -> None:
    io = connect(echo, max_body_bytes=10)
    io.feed(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 11\r\n\r\n")
    status, headers, _ = split_response(io.take())
    assert status.startswith(b"HTTP/1.1 413 ")
    assert headers[b"connection"] == b"close"
    assert io.closed and not io.streams


async def test_max_body_bytes_on_a_chunked_body_is_413_when_passed() -> None:
    io = connect(echo, max_body_bytes=10)
    io.feed(b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n8\r\n12345678\r\n")
    assert not io.written
    io.feed(b"8\r\n12345678\r\n")
    assert io.take().startswith(b"HTTP/1.1 413 ")
    assert io.closed
    await io.wait_apps()  # the app saw a disconnect and its send failed: nothing more written
    assert io.take() == b""


# -- responses ---------------------------------------------------------------------------------


async def test_streaming_response_is_chunked_and_written_as_it_comes() -> None:
    step = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await step.wait()
        await send({"type": "http.response.body", "body": b"data: 2\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    io = connect(app)
    io.feed(GET)
    await wait_output(io, b"data: 1")
    _, headers, body = split_response(io.take())
    assert headers[b"transfer-encoding"] == b"chunked"
    assert body == b"9\r\ndata: 1\n\n\r\n"
    step.set()
    await io.wait_apps()
    assert io.take() == b"9\r\ndata: 2\n\n\r\n0\r\n\r\n"
    assert not io.closed


async def test_a_head_without_body_goes_out_after_the_loop_turn() -> None:
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await release.wait()  # long-poll: nothing to say yet
        await send({"type": "http.response.body", "body": b"late"})

    io = connect(app)
    io.feed(GET)
    await io.run_until(lambda: bool(io.written))
    assert "flush" not in io.timers
    status, headers, body = split_response(io.take())
    assert status == b"HTTP/1.1 200 OK" and headers[b"transfer-encoding"] == b"chunked"
    assert body == b""
    release.set()
    await io.wait_apps()
    assert io.take() == b"4\r\nlate\r\n0\r\n\r\n"


async def test_flush_timer_is_cancelled_when_the_body_follows_at_once() -> None:
    io = connect(hello)
    io.feed(GET)
    await io.wait_apps()
    assert "flush" not in io.timers


async def test_bad_response_header_is_500_and_body_past_content_length_aborts() -> None:
    errors: list[BaseException] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/bad-header":
            headers = [(b"x-evil", b"a\r\nset-cookie: x")]
        else:
            headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        try:
            await send({"type": "http.response.body", "body": b"abc", "more_body": True})
        except Exception as exc:
            errors.append(exc)
            raise

    io = connect(app)
    io.feed(b"GET /bad-header HTTP/1.1\r\nhost: x\r\n\r\n")
    await io.wait_apps()
    data = io.take()
    assert data.startswith(b"HTTP/1.1 500 ") and b"set-cookie" not in data

    io = connect(app)
    io.feed(GET)
    await io.wait_apps()
    assert io.aborted
    assert len(errors) == 2


async def test_head_with_a_streamed_body_writes_only_the_head() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ab", "more_body": True})
        await send({"type": "http.response.body", "body": b"cd"})

    io = connect(app)
    io.feed(b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\n")
    await io.wait_apps()
    data = io.take()
    assert data.endswith(b"\r\n\r\n") and b"ab" not in data
    assert not io.closed


async def test_streaming_response_to_http10_is_close_delimited() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ab", "more_body": True})
        await send({"type": "http.response.body", "body": b"cd"})

    io = connect(app)
    io.feed(b"GET / HTTP/1.0\r\n\r\n")
    await io.wait_apps()
    _, headers, body = split_response(io.take())
    assert b"transfer-encoding" not in headers and b"content-length" not in headers
    assert body == b"abcd"
    assert io.closed


async def test_head_keeps_content_length_but_writes_no_body() -> None:
    io = connect(hello)
    io.feed(b"HEAD /five HTTP/1.1\r\nhost: x\r\n\r\n")
    await io.wait_apps()
    status, headers, body = split_response(io.take())
    assert status == b"HTTP/1.1 200 OK"
    assert headers[b"content-length"] == b"5"
    assert body == b""
    io.feed(GET)  # the connection is still in step
    await io.wait_apps()
    assert split_response(io.take())[2] == b"/path"


@pytest.mark.parametrize("status", [204, 304])
async def test_no_body_statuses_write_no_body(status: int) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ignored"})

    io = connect(app)
    io.feed(GET)
    await io.wait_apps()
    data = io.take()
    assert data.endswith(b"\r\n\r\n") and b"ignored" not in data
    assert not io.closed


async def trailers_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
    await send({"type": "http.response.body", "body": b"body"})
    await send(
        {"type": "http.response.trailers", "headers": [(b"x-sum", b"42")], "more_trailers": False}
    )


async def test_trailers_are_sent_when_the_client_accepts_them() -> None:
    io = connect(trailers_app)
    io.feed(b"GET / HTTP/1.1\r\nhost: x\r\nte: trailers\r\n\r\n")
    await io.wait_apps()
    _, headers, body = split_response(io.take())
    assert headers[b"transfer-encoding"] == b"chunked"
    assert body == b"4\r\nbody\r\n0\r\nx-sum: 42\r\n\r\n"


async def test_trailers_are_dropped_when_the_client_did_not_ask() -> None:
    io = connect(trailers_app)
    io.feed(GET)
    await io.wait_apps()
    _, headers, body = split_response(io.take())
    assert headers[b"content-length"] == b"4"
    assert body == b"body"
    assert not io.closed


# -- bad input ---------------------------------------------------------------------------------


async def test_malformed_request_is_400_with_connection_close() -> None:
    io = connect(hello)
    io.feed(b"GET / HTTP/1.1\r\nbad header\r\n\r\n")
    status, headers, _ = split_response(io.take())
    assert status == b"HTTP/1.1 400 Bad Request"
    assert headers[b"connection"] == b"close"
    assert io.closed and not io.streams


async def test_missing_host_and_bad_chunk_size_are_400() -> None:
    io = connect(hello)
    io.feed(b"GET / HTTP/1.1\r\n\r\n")
    assert io.take().startswith(b"HTTP/1.1 400 ")

    io = connect(echo)
    io.feed(b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n")
    assert io.take().startswith(b"HTTP/1.1 400 ")
    assert io.closed
    await io.wait_apps()


async def test_oversized_head_is_431() -> None:
    io = connect(hello, max_header_bytes=1024)
    io.feed(b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 2000)
    assert io.take().startswith(b"HTTP/1.1 431 ")
    assert io.closed


async def test_data_after_close_is_ignored() -> None:
    io = connect(hello)
    io.feed(b"\x00\x01garbage\r\n\r\n")
    assert io.take().startswith(b"HTTP/1.1 400 ")
    io.feed(GET)
    assert io.take() == b""


# -- timers ------------------------------------------------------------------------------------


async def test_slowloris_gets_408_when_the_header_timer_fires() -> None:
    io = connect(hello)
    assert "keep-alive" in io.timers
    io.feed(b"GET / HTTP/1.1\r\n")
    assert io.timers["header"] == 10.0
    io.fire("keep-alive")  # busy reading a head: the keep-alive timer does nothing
    assert not io.closed
    io.feed(b"host: x\r\n")  # dribbling does not restart it
    assert io.timers == {"header": 10.0}
    io.fire("header")
    assert io.take().startswith(b"HTTP/1.1 408 ")
    assert io.closed and not io.streams


async def test_stalled_body_timer_ends_the_exchange() -> None:
    received: list[Message] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        received.append(await receive())
        received.append(await receive())

    io = connect(app)
    io.feed(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nab")
    await io.run_until(lambda: len(received) == 1)
    assert io.timers["body"] == 60.0
    io.fire("body")
    await io.wait_apps()
    assert received[1] == {"type": "http.disconnect"}
    assert io.take().startswith(b"HTTP/1.1 408 ")
    assert io.closed


# -- shutdown, errors, disconnect --------------------------------------------------------------


async def test_shutdown_closes_an_idle_kept_alive_connection_now() -> None:
    io = connect(hello)
    io.feed(GET)
    await io.wait_apps()
    assert split_response(io.take())[0].startswith(b"HTTP/1.1 200")
    assert isinstance(io.connection, HTTP11Connection)
    io.connection.shutdown()
    assert io.closed


async def test_shutdown_serves_the_first_request_of_a_fresh_connection() -> None:
    """Accepted just before the signal (a restart behind a shared socket): its request, on its
    way, is served (with ``connection: close``) rather than cut or refused."""
    context = ServerContext(ServerConfig(date_header=False))
    io = connect(hello, context=context)
    assert isinstance(io.connection, HTTP11Connection)
    io.connection.shutdown()
    context.shutting_down = True
    assert not io.closed and io.timers["first"] == FIRST_REQUEST_GRACE
    io.feed(GET)
    await io.wait_apps()
    status, headers, body = split_response(io.take())
    assert status.startswith(b"HTTP/1.1 200") and headers[b"connection"] == b"close"
    assert body == b"/path" and io.closed


async def test_shutdown_closes_a_fresh_connection_that_sends_nothing_after_a_grace() -> None:
    io = connect(hello)
    assert isinstance(io.connection, HTTP11Connection)
    io.connection.shutdown()
    assert not io.closed
    io.fire("first")
    assert io.closed and io.take() == b""


async def test_shutdown_lets_the_response_finish_with_connection_close() -> None:
    gate = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await gate.wait()
        await hello(scope, receive, send)

    context = ServerContext(ServerConfig(date_header=False))
    io = connect(app, context=context)
    io.feed(GET)
    await io.run_until(lambda: bool(io.streams))
    assert isinstance(io.connection, HTTP11Connection)
    io.connection.shutdown()
    context.shutting_down = True
    assert not io.closed
    gate.set()
    await io.wait_apps()
    _, headers, body = split_response(io.take())
    assert headers[b"connection"] == b"close" and body == b"/path"
    assert io.closed


async def test_no_next_request_on_a_kept_alive_connection_once_shutting_down() -> None:
    context = ServerContext(ServerConfig(date_header=False))
    io = connect(hello, context=context)
    io.feed(GET)
    await io.wait_apps()
    assert io.take().startswith(b"HTTP/1.1 200 ")
    context.shutting_down = True
    io.feed(GET)
    assert io.take().startswith(b"HTTP/1.1 503 ")
    assert io.closed and len(io.streams) == 1  # no app instance for the second one


async def test_app_exception_before_the_response_is_500() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    io = connect(app)
    io.feed(GET)
    await io.wait_apps()
    assert io.take().startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert io.closed


async def test_app_returning_without_a_response_is_500() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        return

    io = connect(app)
    io.feed(GET)
    await io.wait_apps()
    assert io.take().startswith(b"HTTP/1.1 500 ")


async def test_app_exception_mid_body_aborts() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise RuntimeError("boom")

    io = connect(app)
    io.feed(GET)
    await io.wait_apps()
    assert io.aborted


async def test_bad_asgi_messages_raise_and_answer_500() -> None:
    errors: list[BaseException] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            await send({"type": "http.response.body", "body": b"early"})
        except Exception as exc:
            errors.append(exc)
            raise

    io = connect(app)
    io.feed(GET)
    await io.wait_apps()
    assert len(errors) == 1 and "not started" in str(errors[0])
    assert io.take().startswith(b"HTTP/1.1 500 ")


async def test_disconnect_is_received_and_send_after_it_raises() -> None:
    outcome: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        outcome.append(await receive())  # waits: long-poll
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        except ClientDisconnected as exc:
            outcome.append(exc)

    logged: list[tuple[str, Stream]] = []
    context = ServerContext(ServerConfig(), access_log=lambda a, s: logged.append((a, s)))
    io = connect(app, context=context)
    io.feed(GET)
    await io.run_until(lambda: bool(io.streams))
    for _ in range(3):
        await asyncio.sleep(0)
    io.lose()
    await io.wait_apps()
    assert outcome[0] == {"type": "http.disconnect"}
    assert isinstance(outcome[1], ClientDisconnected)
    assert [action for action, _ in logged] == ["http.complete"]


async def test_access_log_sees_status_and_bytes() -> None:
    logged: list[tuple[str, int | None, int]] = []

    def log(action: str, stream: Stream) -> None:
        logged.append((action, stream.status, stream.response_bytes))

    io = connect(hello, context=ServerContext(ServerConfig(), access_log=log))
    io.feed(GET)
    await io.wait_apps()
    assert logged == [("http.complete", 200, 5)]
    assert isinstance(io.streams[0], HTTP11Stream)


async def test_receive_after_the_response_is_a_disconnect() -> None:
    seen: list[Message] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await hello(scope, receive, send)
        seen.append(await receive())  # the request itself
        seen.append(await receive())

    io = connect(app)
    io.feed(GET)
    await io.wait_apps()
    assert seen[1] == {"type": "http.disconnect"}


# -- hand-offs ---------------------------------------------------------------------------------


async def test_websocket_upgrade_is_handed_off_with_the_trailing_bytes() -> None:
    ws = pytest.importorskip("towpath.interface.protocol.websocket")
    calls: list[dict[str, Any]] = []

    def fake(io: Any, context: Any, **kwargs: Any) -> None:
        calls.append(kwargs)

    monkey = pytest.MonkeyPatch()
    monkey.setattr(ws.WebSocketConnection, "from_http11_upgrade", fake)
    try:
        io = connect(hello)
        io.feed(
            b"GET /ws HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
            b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
            b"\x81\x80"
        )
    finally:
        monkey.undo()
    assert calls[0]["target"] == b"/ws" and calls[0]["trailing"] == b"\x81\x80"
    assert calls[0]["http_version"] == "1.1"
    assert (b"upgrade", b"websocket") in calls[0]["headers"]
    assert not io.streams and io.timers == {}


async def test_h2_prior_knowledge_without_http2_enabled_is_refused() -> None:
    io = connect(hello, http2=False)
    io.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert io.take().startswith(b"HTTP/1.1 505 ")
    assert io.closed


async def test_h2c_upgrade_hands_off_after_the_101() -> None:
    h2 = pytest.importorskip("towpath.interface.protocol.h2")
    calls: list[dict[str, Any]] = []

    def fake(io: Any, context: Any, **kwargs: Any) -> None:
        calls.append(kwargs)

    monkey = pytest.MonkeyPatch()
    monkey.setattr(h2.H2Connection, "from_h2c_upgrade", fake)
    try:
        io = connect(hello)
        io.feed(
            b"GET /up HTTP/1.1\r\nhost: x\r\nupgrade: h2c\r\nconnection: Upgrade, HTTP2-Settings"
            b"\r\nhttp2-settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\nPRI"
        )
    finally:
        monkey.undo()
    assert io.take() == (
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n"
    )
    assert calls[0]["method"] == "GET" and calls[0]["target"] == b"/up"
    assert calls[0]["settings_header"] == b"AAMAAABkAAQAoAAAAAIAAAAA"
    assert calls[0]["trailing"] == b"PRI"


async def test_h2c_upgrade_with_a_body_is_served_over_http11() -> None:
    io = connect(echo)
    io.feed(
        b"POST / HTTP/1.1\r\nhost: x\r\nupgrade: h2c\r\nconnection: Upgrade, HTTP2-Settings\r\n"
        b"http2-settings: AAMAAABkAAQAoAAAAAIAAAAA\r\ncontent-length: 2\r\n\r\nhi"
    )
    await io.wait_apps()
    status, _, body = split_response(io.take())
    assert status == b"HTTP/1.1 200 OK" and body == b"hi"
    assert not io.closed  # a refused upgrade keeps the connection
    io.feed(GET)
    await io.wait_apps()
    assert split_response(io.take())[2] == b""  # echo of an empty body


@pytest.mark.parametrize(
    "settings_headers",
    [
        b"http2-settings: AAAA\r\n",  # base64 of 3 bytes: not whole settings
        b"http2-settings: !!!\r\n",
        b"http2-settings: AAMAAABk\r\nhttp2-settings: AAMAAABk\r\n",  # two of them
    ],
)
async def test_h2c_upgrade_with_bad_settings_is_served_over_http11(settings_headers: bytes) -> None:
    io = connect(echo)
    io.feed(
        b"GET /x HTTP/1.1\r\nhost: x\r\nupgrade: h2c\r\nconnection: Upgrade, HTTP2-Settings\r\n"
        + settings_headers
        + b"\r\n"
    )
    await io.wait_apps()
    status, _, _ = split_response(io.take())
    assert status == b"HTTP/1.1 200 OK"  # no 101 followed by a GOAWAY
    assert not io.closed


async def test_pipelined_posts_with_bodies() -> None:
    io = connect(echo)
    io.feed(
        b"POST /1 HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\none"
        b"POST /2 HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n"
        b"GET /3 HTTP/1.1\r\nhost: x\r\n\r\n"
    )
    await io.run_until(lambda: io.written.count(b"HTTP/1.1 200") == 3)
    await io.wait_apps()
    data = io.take()
    assert data.index(b"\r\n\r\none") < data.index(b"\r\n\r\ntwo")
    assert data.endswith(b"content-length: 0\r\n\r\n")
    assert not io.closed


async def test_disconnect_while_reading_the_body() -> None:
    received: list[Message] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        received.append(await receive())
        received.append(await receive())

    io = connect(app)
    io.feed(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc")
    await io.run_until(lambda: len(received) == 1)
    io.lose()
    await io.wait_apps()
    assert received == [
        {"type": "http.request", "body": b"abc", "more_body": True},
        {"type": "http.disconnect"},
    ]
    assert io.written == b""


async def test_expect_100_continue_over_the_limit_is_413_without_100() -> None:
    io = connect(echo, max_body_bytes=3)
    io.feed(b"POST / HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 4\r\n\r\n")
    data = io.take()
    assert data.startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in data


@pytest.mark.parametrize("streamed", [False, True])
async def test_large_response_bodies_are_written_uncopied(streamed: bool) -> None:
    body = bytes(range(256)) * 1024  # 256 KiB

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if streamed:
            await send({"type": "http.response.body", "body": body, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            await send({"type": "http.response.body", "body": body})

    io = connect(app)
    io.feed(GET)
    await io.wait_apps()
    _, headers, rest = split_response(io.take())
    if streamed:
        assert rest == b"40000\r\n" + body + b"\r\n0\r\n\r\n"
    else:
        assert headers[b"content-length"] == b"262144" and rest == body


# -- limits that must hold on every path -------------------------------------------------------


async def test_a_stalled_body_of_an_upgrade_request_gets_408() -> None:
    io = connect(hello)
    io.feed(
        b"GET /ws HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
        b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n"
        b"content-length: 10\r\n\r\nab"
    )
    assert io.timers["body"] == 60.0
    io.fire("body")
    assert io.take().startswith(b"HTTP/1.1 408 ")
    assert io.closed and not io.streams


@pytest.mark.parametrize("method", [b"HEAD", b"GET"])
async def test_an_app_content_length_that_is_not_a_number_is_never_written(method: bytes) -> None:
    """On a HEAD (or 204/304) response the app's content-length is written as it is, not
    through h11: it must be checked like every other header (no response splitting)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-length", b"0\r\nx-injected: 1")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    io = connect(app)
    io.feed(method + b" / HTTP/1.1\r\nhost: x\r\n\r\n")
    await io.wait_apps()
    data = io.take()
    assert data.startswith(b"HTTP/1.1 500 ")
    assert b"x-injected" not in data
    assert io.closed


# -- request heads checked before h11 (http11_head) ---------------------------------------------

HEAD_CASES = {
    "ok": (b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", None),
    "content-length and chunked": (
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
        400,
    ),
    "content-length twice": (
        b"POST / HTTP/1.1\r\nhost: x\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n",
        400,
    ),
    "chunked, identity": (
        b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked, identity\r\n\r\n",
        400,
    ),
    "gzip, chunked": (
        b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
        501,
    ),
    "TE on 1.0": (b"POST / HTTP/1.0\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n", 400),
    "obs-fold": (b"GET / HTTP/1.1\r\nhost: x\r\nx-a: b\r\n\tc\r\n\r\n", 400),
    "bare LF": (b"GET / HTTP/1.1\r\nhost: x\n\r\n", 400),
    "HTTP/3.0": (b"GET / HTTP/3.0\r\nhost: x\r\n\r\n", 505),
    "the HTTP/2 preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", None),
    "too many fields": (b"GET / HTTP/1.1\r\n" + b"x: y\r\n" * 5 + b"\r\n", 431),
    "too long": (b"GET / HTTP/1.1\r\nx: " + b"y" * 100 + b"\r\n\r\n", 431),
    "request line too long": (b"GET /" + b"a" * 200 + b" HTTP/1.1\r\n\r\n", 414),
}


@pytest.mark.parametrize("name", HEAD_CASES)
def test_check_head(name: str) -> None:
    from towpath.interface.protocol.http11_head import check_head

    data, expected = HEAD_CASES[name]
    config = ServerConfig(max_header_bytes=100, max_header_count=4)
    assert check_head(data + b"body bytes", config).status == expected


def test_an_incomplete_head_waits() -> None:
    from towpath.interface.protocol.http11_head import check_head

    check = check_head(b"GET / HTTP/1.1\r\nhost: x\r\n", ServerConfig())
    assert check.status is None and check.length is None


def test_chunk_scanner_follows_a_body_fed_a_byte_at_a_time() -> None:
    from towpath.interface.protocol.http11_head import MAX_CHUNK_SIZE, ChunkScanner

    body = b"5;name=value\r\nhello\r\n00a\r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\n"
    scanner = ChunkScanner(None)
    for i in range(len(body)):
        assert scanner.feed(body[i : i + 1]) is None
        assert scanner.done == (i == len(body) - 1)
    assert scanner.feed(b"GET / HTTP/1.1\r\n\r\n") is None  # past the body: not looked at
    assert ChunkScanner(None).feed(b"%x\r\n" % MAX_CHUNK_SIZE) is None
    assert ChunkScanner(None).feed(b"%x\r\n" % (MAX_CHUNK_SIZE + 1)) == 400
    assert ChunkScanner(None).feed(b"ffffffffffffffffffff\r\n") == 400
    assert ChunkScanner(10).feed(b"6\r\nabcdef\r\n5\r\n") == 413


async def test_chunked_request_then_pipelined_request_fed_a_byte_at_a_time() -> None:
    io = connect(echo)
    data = (
        b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\nde"
    )
    for i in range(len(data)):
        io.feed(data[i : i + 1])
    await io.wait_apps()
    out = io.take()
    assert out.count(b"HTTP/1.1 200 OK") == 2 and out.endswith(b"de") and b"abc" in out
    assert io.closed


async def test_a_huge_chunk_size_after_a_good_chunk_is_400() -> None:
    io = connect(echo)
    io.feed(b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
    io.feed(b"1" + b"0" * 16 + b"\r\n")
    await io.wait_apps()
    assert io.take().startswith(b"HTTP/1.1 400 ") and io.closed


@pytest.mark.parametrize("pieces", [1, 3, 500])
async def test_head_limits_hold_however_the_head_arrives(pieces: int) -> None:
    head = b"GET / HTTP/1.1\r\nhost: x\r\n" + b"".join(b"x-%d: v\r\n" % i for i in range(120))
    head += b"\r\n"
    io = connect(hello)
    step = -(-len(head) // pieces)
    for start in range(0, len(head), step):
        io.feed(head[start : start + step])
    assert io.take().startswith(b"HTTP/1.1 431 ") and io.closed
    io = connect(hello, max_header_bytes=1024)
    target = b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nhost: x\r\n\r\n"
    step = -(-len(target) // pieces)
    for start in range(0, len(target), step):
        io.feed(target[start : start + step])
    assert io.take().startswith(b"HTTP/1.1 414 ") and io.closed
