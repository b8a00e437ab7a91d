"""towpath.compat against the installed libraries, and no dependency internals used elsewhere.

Each internal in ``towpath/compat.py`` is exercised on real objects (an h2 connection receiving
a real GOAWAY; a redis-py connection to a real redis-server); a failure names the library and
its installed version. A static check (the ``ast`` of every towpath module) fails when a private
attribute or private module of a dependency is used outside compat.py, and pyproject.toml must
cap exactly the libraries compat.py reaches into.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.metadata
import math
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import redis.asyncio
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ConnectionTerminated, RequestReceived, ResponseReceived, StreamEnded
from h2.exceptions import ProtocolError
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.support.waiting import WAIT, until
from towpath import compat
from towpath.testing.services import RedisServer

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "towpath"


def changed(distribution: str, what: str) -> str:
    """The failure message: the library, its installed version, where to look."""
    return str(compat.internal_changed(distribution, what))


# -- h2 ----------------------------------------------------------------------------------------


def _request_then_goaway() -> tuple[H2Connection, H2Connection, int]:
    """A client that sent a request and then GOAWAY(NO_ERROR); the server has read both."""
    client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    server = H2Connection(H2Configuration(client_side=False, header_encoding=None))
    client.initiate_connection()
    server.initiate_connection()
    client.receive_data(server.data_to_send())
    stream_id = client.get_next_available_stream_id()
    head = [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/")]
    client.send_headers(stream_id, head, end_stream=True)
    client.close_connection()  # GOAWAY(NO_ERROR), last stream 0: it accepts no push
    events = server.receive_data(client.data_to_send())
    kinds = [type(event) for event in events]
    assert RequestReceived in kinds
    assert ConnectionTerminated in kinds
    return client, server, stream_id


def test_h2_refuses_sends_after_a_goaway_on_its_own() -> None:
    """Why h2_reopen_after_goaway exists: without it the in-flight request cannot be answered.
    When this fails, h2 lets streams finish by itself and the function can go."""
    _, server, stream_id = _request_then_goaway()
    try:
        server.send_headers(stream_id, [(":status", "200")], end_stream=True)
    except ProtocolError:
        return
    pytest.fail(
        f"towpath.compat: h2 {importlib.metadata.version('h2')} answers after a GOAWAY by itself"
        " now: h2_reopen_after_goaway can go (see towpath/compat.py)"
    )


def test_h2_reopen_after_goaway_lets_in_flight_streams_be_answered() -> None:
    client, server, stream_id = _request_then_goaway()
    what = "H2Connection.state_machine.state (reopened after a GOAWAY)"
    try:
        compat.h2_reopen_after_goaway(server)
        server.send_headers(stream_id, [(":status", "200")])
        server.send_data(stream_id, b"ok", end_stream=True)
        compat.h2_reopen_after_goaway(client)  # the side that sent the GOAWAY reads on
        events = client.receive_data(server.data_to_send())
    except (compat.InternalChanged, ProtocolError) as exc:
        pytest.fail(f"{changed('h2', what)}: {exc!r}")
    kinds = [type(event) for event in events]
    assert ResponseReceived in kinds and StreamEnded in kinds, changed("h2", what)


# -- redis-py ----------------------------------------------------------------------------------


async def _connect(url: str) -> AbstractConnection:
    pool = redis.asyncio.ConnectionPool.from_url(url)
    connection: AbstractConnection = pool.make_connection()  # type: ignore[no-untyped-call]
    await connection.connect()  # type: ignore[no-untyped-call]
    return connection


@pytest.mark.redis
async def test_redis_write_and_usable_on_a_real_connection(redis_server: RedisServer) -> None:
    connection = await _connect(redis_server.url)
    admin = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        assert compat.redis_usable(connection), changed("redis", "AbstractConnection._reader")
        compat.redis_write(connection, b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n")
        client_id = int(await connection.read_response())
        # the server closes the connection while it is idle (what a restart looks like)
        assert await admin.client_kill_filter(_id=client_id) == 1
        await until(
            lambda: not compat.redis_usable(connection),
            "redis_usable to see the server's close: "
            + changed("redis", "AbstractConnection._reader"),
        )
    finally:
        await connection.disconnect()
        await admin.aclose()
    assert not compat.redis_usable(connection)
    with pytest.raises(ConnectionError):
        compat.redis_write(connection, b"*1\r\n$4\r\nPING\r\n")


@pytest.mark.redis
async def test_redis_abort_breaks_a_blocked_read_from_outside(redis_server: RedisServer) -> None:
    connection = await _connect(redis_server.url)
    admin = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        await connection.send_command("BLPOP", "compat-nothing", 0, check_health=False)
        reading = asyncio.ensure_future(connection.read_response(timeout=math.inf))

        async def blocked() -> bool:
            info = await admin.info("clients")
            return int(info["blocked_clients"]) == 1

        await until(blocked, "the BLPOP to block")
        compat.redis_abort(connection)
        assert not compat.redis_usable(connection), changed("redis", "AbstractConnection._writer")
        try:
            await asyncio.wait_for(reading, WAIT)
        except (RedisConnectionError, OSError):
            pass  # the read failed with a connection error, as the layer expects
        except TimeoutError:
            pytest.fail(
                "the blocked read went on: " + changed("redis", "AbstractConnection._writer")
            )
        else:
            pytest.fail("the blocked read returned a reply")
    finally:
        await connection.disconnect()
        await admin.aclose()
    compat.redis_abort(None)  # nothing to abort
    compat.redis_abort(connection)  # not connected: left as is


# -- the rest of towpath: public APIs only -------------------------------------------------------


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _top(module: str) -> str:
    return module.split(".")[0]


def _foreign(module: str) -> bool:
    """A module of a dependency: neither towpath's nor the standard library's."""
    top = _top(module)
    return top != "towpath" and top not in sys.stdlib_module_names


def own_private_names(sources: list[str]) -> set[str]:
    """Every private name towpath defines itself: functions, classes, attributes assigned,
    ``__slots__`` entries, module files (``towpath.layers._loops``)."""
    names = {path.stem for path in PACKAGE.rglob("_*.py")}
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == "__slots__" for target in node.targets
            ):
                names.update(
                    item.value
                    for item in ast.walk(node.value)
                    if isinstance(item, ast.Constant) and isinstance(item.value, str)
                )
    return {name for name in names if _private(name)}


def private_uses(source: str, own: set[str]) -> list[tuple[int, str]]:
    """(line, what) for each use in ``source`` of a dependency's private name, in line order:

    - an import from a private module of another package, or of a private name from one;
    - ``getattr``/``setattr``/``hasattr``/``delattr`` of a private name on anything but
      ``self``/``cls``;
    - ``x._name`` where towpath defines no ``_name`` itself; or, whatever towpath defines,
      where ``x`` is bound to a dependency's import or annotated with a dependency's type (a
      parameter, a variable, an attribute of ``self``).
    """
    tree = ast.parse(source)
    found: list[tuple[int, str]] = []
    imported: set[str] = set()  # local names bound to a dependency's module or object
    stdlib: set[str] = set()  # local names bound to the standard library's (os._exit is public)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if _top(node.module) == "towpath":
                continue
            if any(_private(part) for part in node.module.split(".")):
                found.append((node.lineno, f"from {node.module} import ..."))
            for alias in node.names:
                if _private(alias.name):
                    found.append((node.lineno, f"from {node.module} import {alias.name}"))
                if _foreign(node.module):
                    imported.add(alias.asname or alias.name)
                else:
                    stdlib.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if _top(alias.name) == "towpath":
                    continue
                if any(_private(part) for part in alias.name.split(".")):
                    found.append((node.lineno, f"import {alias.name}"))
                if _foreign(alias.name):
                    imported.add(alias.asname or _top(alias.name))
                else:
                    stdlib.add(alias.asname or _top(alias.name))

    def foreign_type(annotation: ast.expr | None) -> bool:
        return annotation is not None and any(
            isinstance(item, ast.Name) and item.id in imported for item in ast.walk(annotation)
        )

    typed_self = {  # attributes of self annotated with a dependency's type
        node.target.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Attribute)
        and isinstance(node.target.value, ast.Name)
        and node.target.value.id == "self"
        and foreign_type(node.annotation)
    }

    def check(node: ast.AST, typed: set[str]) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            arguments = node.args
            typed = typed | {
                arg.arg
                for arg in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
                if foreign_type(arg.annotation)
            }
            typed |= {
                item.target.id
                for item in ast.walk(node)
                if isinstance(item, ast.AnnAssign)
                and isinstance(item.target, ast.Name)
                and foreign_type(item.annotation)
            }
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
            and not (isinstance(node.args[0], ast.Name) and node.args[0].id in ("self", "cls"))
        ):
            found.append((node.lineno, f"{node.func.id}(..., {node.args[1].value!r})"))
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            value = node.value
            if isinstance(value, ast.Name) and value.id in stdlib:
                pass
            elif node.attr not in own:
                found.append((node.lineno, f"{ast.unparse(value)}.{node.attr}"))
            elif (isinstance(value, ast.Name) and value.id in typed) or (
                isinstance(value, ast.Attribute)
                and isinstance(value.value, ast.Name)
                and value.value.id == "self"
                and value.attr in typed_self
            ):
                found.append((node.lineno, f"{ast.unparse(value)}.{node.attr} (a dependency's)"))
        for child in ast.iter_child_nodes(node):
            check(child, typed)

    check(tree, set(imported))
    return sorted(found)


def test_the_private_use_check_finds_what_it_is_meant_to() -> None:
    """The check below, on the uses that compat.py replaced, and on towpath's own names."""
    bad = """
from h11._state import MIGHT_SWITCH_PROTOCOL
import h11
from redis.asyncio.connection import AbstractConnection

class Thing:
    def __init__(self, connection: AbstractConnection) -> None:
        self._writer = None
        self.connection: AbstractConnection = connection

    def use(self, event, h11_conn) -> None:
        event.headers._full_items
        h11_conn._receive_buffer
        h11._util
        getattr(self.connection, "_writer", None)
        self.connection._writer

def write(connection: AbstractConnection) -> None:
    connection._writer.write(b"")
"""
    found = [what for _, what in private_uses(bad, own_private_names([bad]))]
    assert found == [
        "from h11._state import ...",
        "event.headers._full_items",
        "h11_conn._receive_buffer",
        "h11._util",
        "getattr(..., '_writer')",
        "self.connection._writer (a dependency's)",
        "connection._writer (a dependency's)",
    ], found
    own = """
import os
class Mine:
    __slots__ = ("_slot",)
    def __init__(self) -> None:
        self._state = 1
    def _helper(self, other: "Mine") -> None:
        other._state, other._slot, other._helper, self._slot
        os._exit
"""
    assert list(private_uses(own, own_private_names([own]))) == []


def test_no_dependency_internals_outside_compat() -> None:
    files = sorted(path for path in PACKAGE.rglob("*.py") if path != PACKAGE / "compat.py")
    sources = [path.read_text() for path in files]
    own = own_private_names([*sources, (PACKAGE / "compat.py").read_text()])
    problems = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path, source in zip(files, sources, strict=True)
        for line, what in private_uses(source, own)
    ]
    assert not problems, (
        "private internals of dependencies used outside towpath/compat.py (use a public API, or "
        "put the access behind a named function there, with a test here):\n" + "\n".join(problems)
    )


# -- where compat.py is imported from, and pyproject.toml's caps --------------------------------


def test_sans_io_modules_and_compat_import_neither_asyncio_nor_redis() -> None:
    code = (
        "import sys\n"
        "import towpath.compat, towpath.interface.protocol.http11\n"
        "import towpath.interface.protocol.h2, towpath.interface.protocol.h2_websocket\n"
        "import towpath.interface.protocol.websocket\n"
        "print(sorted(m for m in ('asyncio', 'redis') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_pyproject_caps_exactly_the_libraries_compat_reaches_into() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra, items in project["optional-dependencies"].items():
        if extra != "dev":  # benchmark peers and tools, pinned for other reasons
            requirements += items
    capped = set()
    for requirement in requirements:
        name = requirement.split(";")[0]
        for separator in "<>=!~[ ":
            name = name.split(separator)[0]
        if "<" in requirement:
            capped.add(name.lower())
    assert capped == set(compat.INTERNALS), (
        "pyproject.toml should cap below the next major exactly the libraries whose internals "
        f"towpath/compat.py uses ({sorted(compat.INTERNALS)}); capped: {sorted(capped)}"
    )
