"""The code of docs/migrating.md, docs/consumers.md and README.md runs as printed: each block
marked ``<!-- test: NAME -->`` is taken from the page and executed against real parts (the
in-process server, ``towpath serve`` and ``towpath runworker``, a real redis-server, Django
Channels, fast-channels, FastAPI), with real clients. Only what must differ is substituted,
visibly (:func:`adapted`): the Redis port becomes the test server's.

Every other Python block of README.md and docs/*.md is checked for the drift that broke the
FastAPI snippets: it must compile, its ``import``s must resolve, and each ``CHANNEL_LAYERS`` it
shows must build (every ``CONFIG`` option accepted by its layer, nothing connected).
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import importlib.util
import json
import re
import shlex
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.routing import WebSocketRoute
from websockets.asyncio.client import connect

from tests.support.commands import runworker
from tests.support.waiting import WAIT
from towpath.config import build_layer, parse_channel_layers
from towpath.layers import InMemoryChannelLayer, register_channel_layer
from towpath.layers.redis import RedisChannelLayer
from towpath.layers.registry import unregister_channel_layer
from towpath.testing.processes import towpath_serve
from towpath.testing.server import running_server
from towpath.testing.services import RedisServer

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
_MARKED = re.compile(r"^<!-- test: ([\w-]+) -->\n```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```$", re.MULTILINE | re.DOTALL)
#: modules that a page's snippet imports and the page itself does not define (its reader's
#: own project), per page
PLACEHOLDER_MODULES = {"consumers.md": {"chat.consumers", "jobs"}}


def marked(page: str) -> dict[str, str]:
    """The blocks of ``page`` marked ``<!-- test: NAME -->``, by name."""
    found = _MARKED.findall((DOCS / page if page != "README.md" else ROOT / page).read_text())
    return {name: body for name, _, body in found}


def adapted(text: str, substitutions: dict[str, str]) -> str:
    """``text`` with each value the page prints replaced by the test's; each must occur."""
    for printed, used in substitutions.items():
        assert printed in text, f"the snippet no longer says {printed!r}:\n{text}"
        text = text.replace(printed, used)
    return text


def after_diff(diff: str) -> str:
    """The new side of a ``diff`` block: context and ``+`` lines, without their marks."""
    return "".join(line[1:] + "\n" for line in diff.splitlines() if line[:1] in (" ", "+"))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path for the modules a snippet imports; they are forgotten after."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


# -- docs/migrating.md -------------------------------------------------------------------------


async def test_the_fastapi_app_of_migrating_md_chats(project: Path) -> None:
    """The whole FastAPI example: a towpath consumer mounted with
    ``app.router.add_websocket_route``, served in-process, two clients in one room."""
    (project / "fastapi_chat.py").write_text(marked("migrating.md")["fastapi-mount"])
    module = importlib.import_module("fastapi_chat")
    try:
        async with running_server(module.app) as server:
            url = server.ws_url + "/ws/chat/lobby"
            async with connect(url) as ada, connect(url) as bob, connect(url + "2") as eve:
                await ada.send(json.dumps({"text": "hello"}))
                async with asyncio.timeout(WAIT):
                    assert json.loads(await bob.recv()) == {"text": "hello"}
                    assert json.loads(await ada.recv()) == {"text": "hello"}
                    await eve.send(json.dumps({"text": "other room"}))
                    assert json.loads(await eve.recv()) == {"text": "other room"}
                    await ada.send(json.dumps({"text": "again"}))
                    assert json.loads(await bob.recv()) == {"text": "again"}  # not eve's
        # the other way the page names: a WebSocketRoute in FastAPI(routes=...)
        route = WebSocketRoute("/ws/chat/{room}", module.ChatConsumer.as_asgi())
        async with (
            running_server(FastAPI(routes=[route])) as server,
            connect(server.ws_url + "/ws/chat/lobby") as ada,
        ):
            await ada.send(json.dumps({"text": "routes="}))
            async with asyncio.timeout(WAIT):
                assert json.loads(await ada.recv()) == {"text": "routes="}
    finally:
        unregister_channel_layer("default")


@pytest.mark.redis
def test_the_django_settings_of_migrating_md(redis_server: RedisServer, tmp_path: Path) -> None:
    """Channels 4 builds towpath's layer from the one-line change; the consumers' calls and
    ``async_to_sync(layer.group_send)`` in a view work on it (a fresh Django process)."""
    settings = adapted(
        after_diff(marked("migrating.md")["django-layer"]),
        {'("localhost", 6379)': f'("127.0.0.1", {redis_server.port})'},
    )
    script = settings + textwrap.dedent(
        """
        import asyncio
        import django
        from django.conf import settings

        settings.configure(INSTALLED_APPS=["channels"], CHANNEL_LAYERS=CHANNEL_LAYERS)
        django.setup()
        from asgiref.sync import async_to_sync
        from channels.exceptions import ChannelFull
        from channels.layers import get_channel_layer

        import towpath.layers

        layer = get_channel_layer()
        print(type(layer).__module__, type(layer).__name__, layer.capacity)
        channel = async_to_sync(layer.new_channel)()
        async_to_sync(layer.group_add)("room", channel)
        async_to_sync(layer.group_send)("room", {"type": "chat.message", "text": "from a view"})
        print(async_to_sync(layer.receive)(channel))
        print(issubclass(towpath.layers.ChannelFull, ChannelFull))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "towpath.layers.redis.core RedisChannelLayer 100",
        "{'type': 'chat.message', 'text': 'from a view'}",
        "True",
    ], done.stdout


@pytest.mark.redis
async def test_the_channels_1_project_of_migrating_md(
    redis_server: RedisServer, project: Path
) -> None:
    """The Channels 1 settings and the towpath version of its consumers, decoupled as the
    page's "Processes" table says: ``towpath serve --settings`` and ``towpath runworker``."""
    blocks = marked("migrating.md")
    settings = adapted(blocks["channels1-settings"], {"redis://localhost:6379/0": redis_server.url})
    (project / "settings.py").write_text(settings)
    (project / "myproject").mkdir()
    (project / "myproject" / "__init__.py").write_text("")
    (project / "myproject" / "routing.py").write_text(blocks["channels1-consumers"])
    layers = parse_channel_layers(_namespace(settings)["CHANNEL_LAYERS"])
    built = build_layer(layers.layer("default"))
    assert isinstance(built, RedisChannelLayer) and built.prefix == "asgi"
    async with (
        towpath_serve("--settings", "settings.py", "--port", "0", cwd=project) as served,
        runworker("--settings", "settings.py", tag="w", cwd=project),
    ):
        url = served.ws_url + "/chat/"
        async with connect(url, open_timeout=WAIT) as ada, connect(url, open_timeout=WAIT) as bob:
            async with asyncio.timeout(WAIT):
                await ada.send("hello, 2016")
                assert await ada.recv() == "hello, 2016"
                assert await bob.recv() == "hello, 2016"


@pytest.mark.redis
async def test_the_fast_channels_registry_of_migrating_md(redis_server: RedisServer) -> None:
    from fast_channels.layers import get_channel_layer, unregister_channel_layer

    code = adapted(
        after_diff(marked("migrating.md")["fast-channels-layer"]),
        {"redis://localhost:6379": redis_server.url},
    )
    exec(compile(code, "migrating.md", "exec"), {})
    layer = get_channel_layer("chat")
    assert isinstance(layer, RedisChannelLayer)  # towpath's, from fast-channels' registry
    try:
        channel = await layer.new_channel()
        await layer.group_add("room", channel)
        await layer.group_send("room", {"type": "chat.message", "text": "hi"})
        async with asyncio.timeout(WAIT):
            assert await layer.receive(channel) == {"type": "chat.message", "text": "hi"}
    finally:
        unregister_channel_layer("chat")
        await layer.close()


# -- docs/consumers.md -------------------------------------------------------------------------


@pytest.fixture
def consumers_md(project: Path) -> Any:
    """The page's routing, with the modules it imports: ``jobs`` is the page's message
    consumers, ``chat.consumers`` the page's ``Feed`` as ``LongPoll`` and a chat consumer."""
    blocks = marked("consumers.md")
    (project / "jobs.py").write_text(blocks["message-consumers"])
    (project / "chat").mkdir()
    (project / "chat" / "__init__.py").write_text("")
    (project / "chat" / "consumers.py").write_text(
        "from tests.support.consumers import ChatConsumer\n"
        "from towpath.consumers import AsyncHttpConsumer\n\n"
        + blocks["feed"]
        + "\nLongPoll = Feed\n"
    )
    (project / "myapp_routing.py").write_text(blocks["routing"])
    return importlib.import_module("myapp_routing")


class JoinWatchingLayer(InMemoryChannelLayer):
    """The in-memory layer, telling when a consumer joined a group."""

    def __init__(self) -> None:
        super().__init__()
        self.joined: dict[str, asyncio.Event] = {}

    async def group_add(self, group: str, channel: str) -> None:
        await super().group_add(group, channel)
        self.joined.setdefault(group, asyncio.Event()).set()


async def test_the_routing_and_consumers_of_consumers_md(consumers_md: Any) -> None:
    layer = JoinWatchingLayer()
    layer.joined["feed"] = asyncio.Event()
    register_channel_layer("default", layer)
    try:
        await _serve_consumers_md(consumers_md.router, layer)
    finally:
        unregister_channel_layer("default")


async def _serve_consumers_md(router: Any, layer: JoinWatchingLayer) -> None:
    assert router.channels == {"websocket.connect", "http.request", "thumbnail"}
    async with running_server(router) as server, httpx.AsyncClient(timeout=WAIT) as client:
        hello = await client.get(server.url + "/hello/ada")
        assert (hello.status_code, hello.text) == (200, "Hello, ada")
        assert hello.headers["content-type"] == "text/plain; charset=utf-8"
        assert (await client.get(server.url + "/nowhere")).status_code == 404
        # the long-poll feed: headers and a first event, then a group_send completes it
        async with client.stream("GET", server.url + "/poll") as feed:
            assert feed.headers["content-type"] == "text/event-stream"
            chunks = feed.aiter_bytes()
            assert await anext(chunks) == b"data: hello\n\n"
            async with asyncio.timeout(WAIT):
                await layer.joined["feed"].wait()
            await layer.group_send("feed", {"type": "feed.item", "data": "bye"})
            assert b"".join([chunk async for chunk in chunks]) == b"bye"
        url = server.ws_url + "/ws/chat/lobby/"
        async with connect(url) as ada, connect(url) as bob:
            await ada.send(json.dumps({"message": "routed"}))
            async with asyncio.timeout(WAIT):
                assert json.loads(await bob.recv()) == {"message": "routed"}


# -- every other block: compiles, imports, layers build ----------------------------------------


def _namespace(code: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(compile(code, "<snippet>", "exec"), namespace)
    return namespace


def python_blocks() -> list[Any]:
    """Every Python block of README.md and docs/*.md, as a param named after where it is."""
    blocks = []
    for page in PAGES:
        text = page.read_text()
        for match in _FENCE.finditer(text):
            if match.group(1) == "python":
                where = f"{page.relative_to(ROOT)}:{text[: match.start()].count(chr(10)) + 1}"
                blocks.append(pytest.param(where, match.group(2), id=where))
    return blocks


@pytest.mark.parametrize(("where", "code"), python_blocks())
def test_every_python_block_compiles_and_imports(where: str, code: str) -> None:
    try:
        tree = compile(code, where, "exec", ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    except SyntaxError:
        # a fragment: a dict entry ("CONFIG": {...}) or an expression spread over lines
        tree = compile("{" + code + "}", where, "eval", ast.PyCF_ONLY_AST)
    placeholders = PLACEHOLDER_MODULES.get(Path(where.split(":")[0]).name, set())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module not in placeholders:
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name) or importlib.util.find_spec(
                    f"{node.module}.{alias.name}"
                ), f"{where}: {node.module} has no {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)


@pytest.mark.parametrize(
    ("where", "code"),
    [block for block in python_blocks() if re.search(r"^CHANNEL_LAYERS = ", block.values[1], re.M)],
)
def test_every_channel_layers_block_builds(where: str, code: str) -> None:
    layers = parse_channel_layers(_namespace(code)["CHANNEL_LAYERS"], source=where)
    for entry in layers.channel_layers.values():
        build_layer(entry)


def towpath_command_lines() -> list[Any]:
    """Every ``towpath ...`` command in a shell block of README.md, docs/*.md (but the
    generated cli.md) and the examples' READMEs, as a param named after where it is."""
    pages = [*PAGES, *sorted(ROOT.glob("examples/*/README.md"))]
    lines = []
    for page in pages:
        if page.name == "cli.md":
            continue
        text = page.read_text()
        for match in _FENCE.finditer(text):
            if match.group(1) not in ("sh", "bash", ""):
                continue
            first = text[: match.start()].count("\n") + 2
            for offset, line in enumerate(match.group(2).replace("\\\n", " ").splitlines()):
                if line.strip().removeprefix("$ ").startswith("towpath "):
                    where = f"{page.relative_to(ROOT)}:{first + offset}"
                    lines.append(pytest.param(line.strip().removeprefix("$ "), id=where))
    return lines


@pytest.mark.parametrize("line", towpath_command_lines())
def test_every_towpath_command_line_parses(line: str) -> None:
    """The real click commands accept the line's command and options (nothing runs)."""
    import click

    from towpath.cli import main

    words = []
    for word in shlex.split(line, comments=True):
        if word in ("&", "&&", "|", ";") or word.startswith((">", "&")):
            break  # the rest is the shell's
        words.append(word)
    context = click.Context(main, info_name="towpath", **main.context_settings)
    command: click.Command = main
    args = words[1:]
    while isinstance(command, click.Group):
        assert args, f"{line!r} names no command"
        sub = command.get_command(context, args[0])
        assert sub is not None, f"{line!r}: no command {args[0]!r}"
        context = click.Context(sub, info_name=args[0], parent=context)
        command, args = sub, args[1:]
    try:
        command.make_context(context.info_name, args, parent=context.parent)
    except click.ClickException as exc:
        pytest.fail(f"{line!r}: {exc.format_message()}")


@pytest.mark.parametrize("page", ["README.md"])
async def test_the_readme_layer_minute_runs(page: str) -> None:
    """README.md's "A channel layer in a minute", top-level awaits and all."""
    code = marked(page)["layer-in-a-minute"]
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    namespace: dict[str, Any] = {}
    try:
        await eval(compile(code, page, "exec", flags=flags), namespace)
        # the last receive_many got the group message on the reply channel
        assert namespace["channel"] == namespace["reply"]
        assert namespace["message"] == {"type": "chat.message", "text": "hi"}
    finally:
        unregister_channel_layer("default")
