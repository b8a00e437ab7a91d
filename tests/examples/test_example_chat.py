"""``examples/chat`` end to end: the example run as a user runs it (``towpath runserver``, and
``towpath serve`` + ``towpath runworker`` over a real Redis), its page driven in headless
Chromium (Debian's ``chromium`` through Playwright), and a worker restart seen by real
WebSocket clients."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.support.commands import runserver, runworker, stop
from tests.support.waiting import WAIT
from towpath.layers.ipc.store import default_directory
from towpath.testing.processes import towpath_serve
from towpath.testing.services import RedisServer, require_service

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = "examples/chat/settings.py"
ROUTING = "examples.chat.routing:routes"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_HINT = "apt-get install -y chromium (and pip install playwright; never playwright install)"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Headless Debian chromium, driven by Playwright (no downloaded browser)."""
    require_service("chromium", CHROMIUM is not None, CHROMIUM_HINT)
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        require_service("playwright (Python package)", False, CHROMIUM_HINT)
        raise
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            # root (CI containers) needs --no-sandbox; a small /dev/shm would crash tabs
            args=["--disable-dev-shm-usage", *(["--no-sandbox"] if os.geteuid() == 0 else [])],
        )
        try:
            yield launched
        finally:
            await launched.close()


async def open_page(browser: Any, url: str, errors: list[str]) -> Any:
    """A page of the chat at ``url``, once its WebSocket is open."""
    from playwright.async_api import expect

    page = await browser.new_page()
    page.on("pageerror", lambda error: errors.append(f"{page.url}: {error}"))
    await page.goto(url)
    await expect(page.locator("#status")).to_have_text("connected", timeout=WAIT * 1000)
    return page


async def say(page: Any, text: str) -> None:
    await page.fill("#text", text)
    await page.press("#text", "Enter")


async def check_rooms_in_browser(browser: Any, url: str) -> None:
    """Two pages in room ``canal`` see each other's messages; one in room ``lock`` does not."""
    from playwright.async_api import expect

    timeout = WAIT * 1000
    errors: list[str] = []
    ann = await open_page(browser, f"{url}/room/canal/?user=ann", errors)
    bob = await open_page(browser, f"{url}/room/canal/?user=bob", errors)
    # ann hears bob arrive, so both are in the room's group before anyone speaks
    await expect(ann.locator("#messages li.notice")).to_have_text(
        ["ann joined", "bob joined"], timeout=timeout
    )
    cyd = await open_page(browser, f"{url}/room/lock/?user=cyd", errors)

    def said(page: Any) -> Any:
        return page.locator("#messages li.message")

    await say(ann, "hello canal")
    await expect(said(bob)).to_have_text(["annhello canal"], timeout=timeout)
    await say(bob, "hi ann")
    await expect(said(ann)).to_have_text(["annhello canal", "bobhi ann"], timeout=timeout)
    await say(cyd, "anyone in lock?")
    await expect(said(cyd)).to_have_text(["cydanyone in lock?"], timeout=timeout)
    # One more message in canal after lock's: had lock's reached canal, it would show by now.
    await say(ann, "bye")
    await expect(said(bob)).to_have_text(["annhello canal", "bobhi ann", "annbye"], timeout=timeout)
    await expect(said(cyd)).to_have_text(["cydanyone in lock?"], timeout=timeout)
    assert await cyd.locator("#messages li.notice").all_text_contents() == ["cyd joined"]
    assert await cyd.locator("#room-name").text_content() == "lock"
    await bob.close()
    await expect(ann.locator("#messages li.notice").last).to_have_text("bob left", timeout=timeout)
    assert errors == []


async def test_chat_in_browsers_on_runserver(browser: Any) -> None:
    async with runserver("--routing", ROUTING, cwd=ROOT) as served:
        await check_rooms_in_browser(browser, served.url)
        # "/" is the lobby
        errors: list[str] = []
        lobby = await open_page(browser, served.url + "/", errors)
        assert await lobby.locator("#room-name").text_content() == "lobby"
        assert errors == []
        assert await stop(served) == 0


@pytest.mark.redis
async def test_chat_in_browsers_decoupled_over_redis(
    browser: Any, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    async with (
        towpath_serve("--settings", SETTINGS, "--port", "0", cwd=ROOT) as served,
        runworker("--settings", SETTINGS, tag="A", cwd=ROOT),
    ):
        await check_rooms_in_browser(browser, served.url)
        assert await stop(served) == 0


async def test_chat_decoupled_over_ipc_without_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's other decoupled run: no settings, so the IPC layer (this test's own
    prefix, its store removed after)."""
    prefix = f"chat{secrets.token_hex(6)}"
    monkeypatch.setenv("TOWPATH_IPC_PREFIX", prefix)
    monkeypatch.delenv("TOWPATH_SETTINGS", raising=False)
    try:
        async with (
            towpath_serve("--port", "0", cwd=ROOT) as served,
            runworker("--routing", ROUTING, tag="A", cwd=ROOT),
        ):
            assert "the IPC layer" in await served.wait_for_stderr("No --settings")
            room = served.ws_url + "/ws/chat/ipc/"
            async with connect(room + "?user=ann", open_timeout=WAIT) as ann:
                assert await next_event(ann) == {"type": "joined", "user": "ann"}
                async with connect(room + "?user=bob", open_timeout=WAIT) as bob:
                    assert await next_event(ann) == {"type": "joined", "user": "bob"}
                    assert await next_event(bob) == {"type": "joined", "user": "bob"}
                    await say_and_hear_self(ann, "ann", "over ipc")
                    assert await next_event(bob) == {
                        "type": "message",
                        "user": "ann",
                        "text": "over ipc",
                    }
            assert await stop(served) == 0
    finally:
        shutil.rmtree(Path(default_directory()) / f"towpath-ipc-{prefix}", ignore_errors=True)


# -- a worker restart: resumed connects, hand-backs ----------------------------------------


async def next_event(client: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(WAIT):
        event: dict[str, Any] = json.loads(await client.recv())
        return event


async def say_and_hear_self(client: ClientConnection, user: str, text: str) -> None:
    """Send ``text``; the next event must be the room's echo of it (this connection's
    consumer instance is then in the room's group)."""
    await client.send(json.dumps({"text": text}))
    assert await next_event(client) == {"type": "message", "user": user, "text": text}


@pytest.mark.redis
async def test_worker_restart_neither_leaves_nor_rejoins(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    async with towpath_serve("--settings", SETTINGS, "--port", "0", cwd=ROOT) as served:
        room = served.ws_url + "/ws/chat/canal/"
        async with (
            runworker("--settings", SETTINGS, tag="A", cwd=ROOT) as first,
            connect(room + "?user=ann", open_timeout=WAIT) as ann,
        ):
            assert await next_event(ann) == {"type": "joined", "user": "ann"}
            async with connect(room + "?user=bob", open_timeout=WAIT) as bob:
                assert await next_event(ann) == {"type": "joined", "user": "bob"}
                assert await next_event(bob) == {"type": "joined", "user": "bob"}
                async with runworker("--settings", SETTINGS, tag="B", cwd=ROOT):
                    # The first worker stops: it hands both sockets back, the second resumes
                    # them. The clients stay connected and the room hears no "left"/"joined".
                    assert await stop(first) == 0, first.output()
                    await say_and_hear_self(ann, "ann", "still here")
                    me_too = {"type": "message", "user": "bob", "text": "me too"}
                    await bob.send(json.dumps({"text": "me too"}))
                    before = []
                    while (event := await next_event(bob)) != me_too:
                        before.append(event)
                    # bob hears ann's line if his resumed instance was back in the room by then
                    assert before in (
                        [],
                        [{"type": "message", "user": "ann", "text": "still here"}],
                    )
                    assert await next_event(ann) == me_too
                    await bob.close()
                    assert await next_event(ann) == {"type": "left", "user": "bob"}
        assert await stop(served) == 0
