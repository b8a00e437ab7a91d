"""HTTP/2 attacks on a real ``towpath serve`` process, from a real hostile client (h2 over a raw
socket: :class:`towpath.testing.hostile_h2.HostileH2`), each answered as the protocol says while
the server's memory (``/proc/<pid>/status`` VmRSS) and CPU time (``/proc/<pid>/stat``) stay
bounded and a second, normal client (httpx, HTTP/2) is served meanwhile.

The attacks are scaled down to take a second or two, and the bounds are generous: each is far
below what the same attack cost before the server bounded it (``bench/h2_hostile.py`` measures
both). Sans-IO versions: ``tests/interface/protocol/test_protocol_h2_hardening.py``.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from h2.errors import ErrorCodes

from towpath.layers.ipc.store import default_directory
from towpath.testing.hostile_h2 import (
    MAX_WINDOW,
    PING,
    SETTINGS,
    HostileH2,
    cpu_seconds,
    rss_bytes,
)
from towpath.testing.hostile_h2 import idle as _idle
from towpath.testing.processes import ServeProcess, towpath_process, towpath_serve

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
APP = "towpath.testing.hostile_h2:app"


@pytest.fixture
async def served() -> AsyncIterator[ServeProcess]:
    """``towpath serve`` in direct mode on the app the attacks aim at, settled."""
    async with towpath_serve(APP, "--port", "0") as process:
        await second_client_served(process.url)  # warm: imports done, memory settled
        await idle(process.process.pid)
        yield process


async def second_client_served(url: str, requests: int = 1) -> None:
    """A normal HTTP/2 client asks ``requests`` times and gets its answers."""
    async with httpx.AsyncClient(http1=False, http2=True, timeout=5) as client:
        for _ in range(requests):
            response = await client.get(url + "/")
            assert response.status_code == 200
            assert response.http_version == "HTTP/2"
            assert response.text == "ok"


async def attacker(served: ServeProcess, **options: object) -> HostileH2:
    return await asyncio.to_thread(HostileH2, served.host, served.port, **options)  # type: ignore[arg-type]


async def idle(pid: int) -> None:
    """Until the server stopped working (10 s at most)."""
    async with asyncio.timeout(10):
        await _idle(pid)


def app_finished(served: ServeProcess) -> bool:
    return any("hostile-app: sent" in line for line in served.stderr_lines)


# -- a client that never reads --------------------------------------------------------------------


async def test_a_large_response_to_a_client_that_never_reads_is_not_buffered(
    served: ServeProcess,
) -> None:
    pid = served.process.pid
    before = rss_bytes(pid)
    client = await attacker(served, window=MAX_WINDOW, read=False)
    try:
        client.request("/stream?mib=64&chunk_kib=1024")
        await second_client_served(served.url, 3)
        await idle(pid)  # the server pushed what it could
        grown = rss_bytes(pid) - before
        assert grown < 16 * MIB, f"RSS grew by {grown / MIB:.1f} MiB for a 64 MiB response"
        assert not app_finished(served)  # its last send waits for the client
        # the client reads at last: all of it arrives and the app's send returns
        assert await asyncio.to_thread(client.read_all, 64 * MIB) == 64 * MIB
        async with asyncio.timeout(10):
            await served.wait_for_stderr("hostile-app: sent /stream")
    finally:
        client.close()


async def test_many_unread_streams_are_not_buffered_either(served: ServeProcess) -> None:
    pid = served.process.pid
    before = rss_bytes(pid)
    client = await attacker(served, window=MAX_WINDOW, read=False)
    try:
        for _ in range(50):
            client.request("/stream?mib=2&chunk_kib=64")
        await second_client_served(served.url, 3)
        await idle(pid)
        grown = rss_bytes(pid) - before
        assert grown < 24 * MIB, f"RSS grew by {grown / MIB:.1f} MiB for 50 x 2 MiB unread"
    finally:
        client.close()


# -- Rapid Reset ----------------------------------------------------------------------------------


async def test_rapid_reset_gets_goaway_enhance_your_calm(served: ServeProcess) -> None:
    pid = served.process.pid
    cpu_before = cpu_seconds(pid)
    rss_before = rss_bytes(pid)
    client = await attacker(served)
    try:
        pairs, _ = await asyncio.gather(
            asyncio.to_thread(client.rapid_reset, 50_000),
            second_client_served(served.url, 3),  # served while the attack goes on
        )
        assert await asyncio.to_thread(client.wait, lambda seen: seen.goaway is not None, 5)
        assert client.seen.goaway == ErrorCodes.ENHANCE_YOUR_CALM
        assert pairs < 50_000  # the connection was closed under it
        await idle(pid)
        cpu = cpu_seconds(pid) - cpu_before
        assert cpu < 2.0, f"{cpu:.2f} CPU seconds for {pairs} reset streams"
        assert rss_bytes(pid) - rss_before < 32 * MIB
        await second_client_served(served.url)  # and after it
    finally:
        client.close()
    assert not any("Traceback" in line for line in served.stderr_lines), served.output()


@asynccontextmanager
async def runworker_asgi(env: dict[str, str]) -> AsyncIterator[ServeProcess]:
    """``towpath runworker --asgi APP`` on the IPC layer of ``env``, once it listens."""
    async with towpath_process("runworker", "--asgi", APP, env=env) as worker:
        yield worker


async def test_rapid_reset_in_decoupled_mode(tmp_path: Path) -> None:
    """Every stream a Rapid Reset opens would be a message to the workers: the same limit
    stops it, and requests from others still reach a worker."""
    prefix = f"t{secrets.token_hex(6)}"
    env = {"TOWPATH_IPC_PREFIX": prefix, "TOWPATH_SETTINGS": ""}
    try:
        async with (
            towpath_serve("--port", "0", env=env, cwd=tmp_path) as served,
            runworker_asgi(env),
        ):
            await second_client_served(served.url)
            pid = served.process.pid
            await idle(pid)
            cpu_before = cpu_seconds(pid)
            client = await attacker(served)
            try:
                pairs, _ = await asyncio.gather(
                    asyncio.to_thread(client.rapid_reset, 50_000),
                    second_client_served(served.url, 3),
                )
                assert await asyncio.to_thread(client.wait, lambda seen: seen.goaway is not None)
                assert client.seen.goaway == ErrorCodes.ENHANCE_YOUR_CALM
                assert pairs < 50_000
            finally:
                client.close()
            await idle(pid)
            cpu = cpu_seconds(pid) - cpu_before
            assert cpu < 2.0, f"{cpu:.2f} CPU seconds for {pairs} reset streams"
            await second_client_served(served.url)
    finally:
        shutil.rmtree(Path(default_directory()) / f"towpath-ipc-{prefix}", ignore_errors=True)


# -- control-frame floods -------------------------------------------------------------------------


@pytest.mark.parametrize("frame", [PING, SETTINGS], ids=["ping", "settings"])
async def test_a_control_frame_flood_gets_goaway_enhance_your_calm(
    served: ServeProcess, frame: bytes
) -> None:
    pid = served.process.pid
    cpu_before = cpu_seconds(pid)
    client = await attacker(served)
    try:
        await asyncio.gather(
            asyncio.to_thread(client.flood, frame, 2_000_000),
            second_client_served(served.url, 3),
        )
        assert await asyncio.to_thread(client.wait, lambda seen: seen.goaway is not None, 10)
        assert client.seen.goaway == ErrorCodes.ENHANCE_YOUR_CALM
        await idle(pid)
        # 2 million frames, most of them never parsed: the first thousand were answered,
        # the rest read and dropped for a second, then the connection closed
        cpu = cpu_seconds(pid) - cpu_before
        assert cpu < 2.0, f"{cpu:.2f} CPU seconds for a flood"
    finally:
        client.close()


async def test_a_connection_whose_output_is_backed_up_is_not_read_from(
    served: ServeProcess,
) -> None:
    pid = served.process.pid
    client = await attacker(served, window=MAX_WINDOW, read=False)
    client.sock.settimeout(1.0)  # a write stalled this long: the server stopped reading
    try:
        client.request("/stream?mib=64&chunk_kib=64")
        await idle(pid)  # its output backed up: the server stopped writing, and reading
        cpu_before = cpu_seconds(pid)
        rss_before = rss_bytes(pid)
        frames, _ = await asyncio.gather(
            asyncio.to_thread(client.flood, PING, 2_000_000),
            second_client_served(served.url, 3),
        )
        # the PINGs fill the socket buffers, unread and unanswered, then the client is stuck
        assert client.write_failed == "TimeoutError"
        assert frames < 2_000_000
        await idle(pid)
        assert cpu_seconds(pid) - cpu_before < 0.5
        assert rss_bytes(pid) - rss_before < 8 * MIB
    finally:
        client.close()


# -- header lists ---------------------------------------------------------------------------------


async def test_a_header_list_over_the_limit_is_431_and_the_connection_serves_on(
    served: ServeProcess,
) -> None:
    client = await attacker(served)
    try:
        big = client.request("/", [("x-big", "b" * 20_000)])  # over the 16 KiB default
        assert await asyncio.to_thread(client.wait, lambda seen: big in seen.ended)
        assert client.seen.statuses[big] == 431
        small = client.request("/")
        assert await asyncio.to_thread(client.wait, lambda seen: small in seen.ended)
        assert client.seen.statuses[small] == 200
        assert client.seen.goaway is None
        many = client.request("/", [(f"x-{n}", "v") for n in range(101)])  # over 100 fields
        assert await asyncio.to_thread(client.wait, lambda seen: many in seen.ended)
        assert client.seen.statuses[many] == 431
    finally:
        client.close()


async def test_a_header_list_far_over_the_limit_ends_the_connection(
    served: ServeProcess,
) -> None:
    client = await attacker(served)
    try:
        client.request("/", [("x-big", "b" * 40_000)])  # over twice the limit
        assert await asyncio.to_thread(client.wait, lambda seen: seen.goaway is not None)
        assert client.seen.goaway == ErrorCodes.ENHANCE_YOUR_CALM
    finally:
        client.close()
    await second_client_served(served.url)
