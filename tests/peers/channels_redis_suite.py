"""channels_redis 4.3.0's own test suite, run against towpath's Redis layers.

towpath's README says its Redis layers are drop-in backends for channels_redis (same
``CONFIG``). This harness runs channels_redis's public test suite (tests/ of its sdist, which
``make peers`` fetches from PyPI pinned by hash in requirements/peers.lock and unpacks in
``<venv>/peers``; none of it is committed here) with ``channels_redis.core`` and
``channels_redis.pubsub`` mapped to towpath's classes by an import shim (shim/channels_redis),
against a real redis-server and a real Sentinel started on free ports.

What is not run as written is in two tables, printed with every run's summary:

* ``LEFT_OUT``: tests of channels_redis's private internals (key formats, receive buffers,
  exact serialized bytes, private attributes), each with the reason;
* ``ADAPTED``: tests rewritten before the run (an exact snippet of the test's source replaced in
  a copy), where towpath answers with its documented exception instead of an ``assert`` or
  differs on purpose, each with the reason.

Run it on its own (``make peers`` first)::

    .venv/bin/python tests/peers/channels_redis_suite.py [-v] [--runs N]

tests/peers/test_channels_redis_suite.py runs it under ``make test`` and checks the counts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from towpath.testing.services import RedisServer, RedisServerFactory

PEER = "channels_redis-4.3.0"
FETCH_COMMAND = "make peers"
SHIM = Path(__file__).resolve().parent / "shim"
#: what the suite's Sentinel tests expect: master name and Sentinel password
SENTINEL_MASTER = "sentinel"
SENTINEL_PASSWORD = "channels_redis"
#: each group runs in its own pytest process against its own redis-server (the two run at
#: the same time; they use the same group and channel names, so they must not share a server)
GROUPS: dict[str, tuple[str, ...]] = {
    "plain": ("test_core.py", "test_pubsub.py", "test_serializers.py", "test_utils.py"),
    "sentinel": ("test_sentinel.py", "test_pubsub_sentinel.py"),
}
#: the suite's own pytest settings (its setup.cfg [tool:pytest]), plus the loop scope
#: pytest-asyncio asks to be explicit about
PYTEST_INI = """\
[pytest]
addopts = -p no:django -p no:cacheprovider
testpaths = tests
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
timeout = 10
"""

_CORE = "tests/test_core.py"
_SENTINEL = "tests/test_sentinel.py"
_PUBSUB = "tests/test_pubsub.py"
_PUBSUB_SENTINEL = "tests/test_pubsub_sentinel.py"

_KEY_FORMAT = "channels_redis's private Redis key format (_group_key); towpath's keys differ"
_RECEIVE_BUFFER = "channels_redis's private per-channel receive_buffer; towpath has a mailbox"
_PREFIXED_BYTES = (
    "exact bytes of channels_redis's serialize() with its 12-byte random prefix; towpath's "
    "serialize() puts no random prefix in front of the message"
)
_LAYERS_PROXY = "private _layers/_get_layer() of channels_redis's per-loop proxy"
_SERIALIZER_BYTES = (
    "channels_redis's serializer classes: exact bytes behind its random_prefix_length prefix "
    "and encryption inside each class; towpath's serializers add no prefix and the layer wraps "
    "any serializer in its encryption (tests/layers/test_layer_redis.py tests both)"
)

#: test id (all its parametrisations) -> why it is left out
LEFT_OUT: dict[str, str] = {
    f"{_CORE}::test_default_group_key_format": _KEY_FORMAT,
    f"{_CORE}::test_custom_group_key_format": _KEY_FORMAT,
    f"{_CORE}::test_receive_buffer_respects_capacity": _RECEIVE_BUFFER,
    f"{_SENTINEL}::test_default_group_key_format": _KEY_FORMAT,
    f"{_SENTINEL}::test_custom_group_key_format": _KEY_FORMAT,
    f"{_SENTINEL}::test_receive_buffer_respects_capacity": _RECEIVE_BUFFER,
    f"{_SENTINEL}::test_serialize": _PREFIXED_BYTES,
    f"{_SENTINEL}::test_deserialize": _PREFIXED_BYTES,
    f"{_PUBSUB}::test_loop_instance_channel_layer_reference": _LAYERS_PROXY,
    f"{_PUBSUB}::test_multi_event_loop_garbage_collection": _LAYERS_PROXY,
    f"{_PUBSUB_SENTINEL}::test_loop_instance_channel_layer_reference": _LAYERS_PROXY,
    f"{_PUBSUB_SENTINEL}::test_multi_event_loop_garbage_collection": _LAYERS_PROXY,
    "tests/test_utils.py::test_consistent_hash_result": (
        "channels_redis's private shard hash (_consistent_hash, CRC32 ring); towpath shards "
        "with jump consistent hashing"
    ),
    "tests/test_serializers.py::test_serialize": _SERIALIZER_BYTES,
    "tests/test_serializers.py::test_deserialize": _SERIALIZER_BYTES,
    "tests/test_serializers.py::test_serialization_encrypted": _SERIALIZER_BYTES,
}


@dataclass(frozen=True)
class Adaptation:
    """``old`` (which must occur exactly ``count`` times in the test's file) becomes ``new``
    in the run's copy of it. ``test`` is the test id (a file for a module-level change)."""

    test: str
    old: str
    new: str
    reason: str
    count: int = 1

    @property
    def file(self) -> str:
        return self.test.partition("::")[0]


_FOREIGN_BANG = (
    "channels_redis asserts; towpath raises ChannelLayerError (a receive on a '!' channel "
    "another layer instance made would wait forever; asserts vanish under python -O)"
)
_DROP = (
    "closed the layer's connections through private _shards[0]._redis; here the test's "
    "redis-server kills every client connection instead (CLIENT KILL), which the layer must "
    "survive the same way: reconnect and subscribe again"
)


def _reconnect(file: str) -> tuple[Adaptation, ...]:
    return (
        Adaptation(
            file,
            "from channels_redis.utils import _close_redis",
            "from towpath_peer_plugin import drop_connections",
            "the helper the adapted test_auto_reconnect calls instead",
        ),
        Adaptation(
            f"{file}::test_auto_reconnect",
            "await _close_redis(channel_layer._shards[0]._redis)",
            "assert await drop_connections()",
            _DROP,
            count=2,
        ),
    )


ADAPTED: tuple[Adaptation, ...] = (
    *(
        Adaptation(
            f"{file}::test_reject_bad_client_prefix",
            "    with pytest.raises(AssertionError):\n"
            '        await channel_layer.receive("not-client-prefix!local_part")',
            "    from towpath.layers import ChannelLayerError\n\n"
            "    with pytest.raises(ChannelLayerError):\n"
            '        await channel_layer.receive("not-client-prefix!local_part")',
            _FOREIGN_BANG,
        )
        for file in (_CORE, _SENTINEL)
    ),
    Adaptation(
        f"{_PUBSUB}::test_receive_on_non_owned_general_channel",
        'await channel_layer.send("test-channel", "message.1")',
        'await channel_layer.send("test-channel", {"type": "message.1"})',
        "sends a str; a message is a dict in the Channels contract and towpath raises TypeError "
        "for anything else (channels_redis's Pub/Sub layer sends any msgpack value)",
    ),
    Adaptation(
        f"{_PUBSUB}::test_receive_on_non_owned_general_channel",
        'assert await receive_task == "message.1"',
        'assert await receive_task == {"type": "message.1"}',
        "receives the dict the adapted test sends",
    ),
    Adaptation(
        "tests/test_serializers.py::test_refuse_to_register_bad_serializers",
        "    with pytest.raises(AssertionError):\n"
        '        registry.register_serializer("custom", serializer_class)',
        "    with pytest.raises(TypeError):\n"
        '        registry.register_serializer("custom", serializer_class)',
        "channels_redis asserts; towpath raises TypeError naming the class and what it lacks "
        "(asserts vanish under python -O)",
    ),
    *_reconnect(_PUBSUB),
    *_reconnect(_PUBSUB_SENTINEL),
)


@dataclass
class SuiteResult:
    """The outcome of one run: test ids by outcome, plus what the run proved and patched."""

    outcomes: dict[str, list[str]] = field(default_factory=dict)
    proof: dict[str, str] = field(default_factory=dict)
    patched: list[str] = field(default_factory=list)
    matched: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)
    output: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def ids(self, outcome: str) -> list[str]:
        return self.outcomes.get(outcome, [])

    def count(self, outcome: str) -> int:
        return len(self.ids(outcome))


def peers_dir() -> Path:
    """Where ``make peers`` unpacks the sdists: ``peers/`` in the venv running this."""
    return Path(sys.prefix) / "peers"


def suite_dir() -> Path:
    return peers_dir() / PEER / "tests"


def prepare(run_dir: Path, source: Path | None = None) -> None:
    """Copy the suite into ``run_dir/tests`` with every adaptation applied, and its pytest.ini."""
    source = source or suite_dir()
    tests = run_dir / "tests"
    tests.mkdir(parents=True)
    for group in GROUPS.values():
        for name in group:
            shutil.copyfile(source / name, tests / name)
    for adaptation in ADAPTED:
        path = run_dir / adaptation.file
        text = path.read_text()
        found = text.count(adaptation.old)
        if found != adaptation.count:
            raise RuntimeError(
                f"{adaptation.test}: the snippet to adapt occurs {found} times, not "
                f"{adaptation.count} (has the suite changed?):\n{adaptation.old}"
            )
        path.write_text(text.replace(adaptation.old, adaptation.new))
    (run_dir / "pytest.ini").write_text(PYTEST_INI)


def _sentinel_with_password(factory: RedisServerFactory, master: RedisServer) -> RedisServer:
    """A Sentinel for ``master`` under the suite's name, with the suite's password.

    It is started without one (RedisServer waits for an unauthenticated PING) and gets it
    through ACL right after; Sentinel supports ACL since Redis 6.2.
    """
    sentinel = factory.sentinel(master, SENTINEL_MASTER)
    with redis.Redis(host=sentinel.host, port=sentinel.port) as client:
        client.execute_command("ACL", "SETUSER", "default", "on", f">{SENTINEL_PASSWORD}")
    return sentinel


def pytest_command(
    run_dir: Path, files: Sequence[str], config: Mapping[str, Any], *, name: str = "run"
) -> tuple[list[str], dict[str, str]]:
    """The command and environment of one pytest run of ``files`` (in ``run_dir/tests``) with
    the shim first on the path and the plugin reading ``config``."""
    config_path = run_dir / f"config-{name}.json"
    config_path.write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHON"))}
    env["PYTHONPATH"] = str(SHIM)
    env["TOWPATH_PEER_CONFIG"] = str(config_path)
    command = [
        sys.executable,
        "-P",  # the working directory is not put on sys.path: only the shim is
        "-m",
        "pytest",
        "-p",
        "towpath_peer_plugin",
        "-c",
        str(run_dir / "pytest.ini"),
        "--rootdir",
        str(run_dir),
        "-q",
        "-rfEsxX",
        *(f"tests/{f}" for f in files),
    ]
    return command, env


def _run_group(
    name: str,
    files: Sequence[str],
    run_dir: Path,
    server: RedisServer,
    sentinel: RedisServer | None,
    timeout: float,
) -> tuple[dict[str, Any], str]:
    results = run_dir / f"results-{name}.json"
    config = {
        "redis_url": server.url,
        "sentinel": [sentinel.host, sentinel.port] if sentinel else None,
        "left_out": LEFT_OUT,
        "results": str(results),
    }
    command, env = pytest_command(run_dir, files, config, name=name)
    proc = subprocess.run(
        command,
        cwd=run_dir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = proc.stdout + proc.stderr
    if not results.exists():
        raise RuntimeError(
            f"the {name} run (exit status {proc.returncode}) wrote no results:\n{output}"
        )
    return json.loads(results.read_text()), output


def run_suite(
    factory: RedisServerFactory, *, source: Path | None = None, timeout: float = 120.0
) -> SuiteResult:
    """Run the whole suite once: every group at the same time, each against fresh servers."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="towpath-peer-") as tmp:
        run_dir = Path(tmp)
        prepare(run_dir, source)
        plain = factory()
        master = factory()
        sentinel = _sentinel_with_password(factory, master)
        jobs = {"plain": (plain, None), "sentinel": (master, sentinel)}
        with ThreadPoolExecutor(len(GROUPS)) as pool:
            futures = {
                name: pool.submit(_run_group, name, files, run_dir, *jobs[name], timeout=timeout)
                for name, files in GROUPS.items()
            }
            done = {name: future.result() for name, future in futures.items()}
    result = SuiteResult(seconds=time.monotonic() - started)
    for name, (data, output) in done.items():
        result.output[name] = output
        for outcome, ids in data["outcomes"].items():
            result.outcomes.setdefault(outcome, []).extend(ids)
        result.proof.update(data["proof"])
        result.patched += data["patched"]
        result.matched.update(data["matched"])
        result.warnings += data["warnings"]
    return result


def summary(result: SuiteResult, *, verbose: bool = False) -> str:
    """What ran, what was left out or adapted and why, and the counts."""
    lines = [f"channels_redis 4.3.0's own tests against towpath ({result.seconds:.1f} s)"]
    lines.append("the shim wins:")
    lines += [f"  {name} -> {value}" for name, value in sorted(result.proof.items())]
    lines.append("hosts patched: " + ", ".join(result.patched))
    lines.append(f"left out ({result.count('deselected')} tests, {len(LEFT_OUT)} entries):")
    lines += [f"  {test}: {reason}" for test, reason in LEFT_OUT.items()]
    lines.append(f"adapted ({len(ADAPTED)}):")
    lines += [f"  {a.test}: {a.reason}" for a in ADAPTED]
    counts = ", ".join(
        f"{result.count(outcome)} {outcome}"
        for outcome in ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
    )
    lines.append(counts)
    for outcome in ("failed", "error", "skipped", "xfailed", "xpassed"):
        lines += [f"  {outcome.upper()} {test}" for test in result.ids(outcome)]
    lines.append(f"{len(result.warnings)} warnings")
    lines += [f"  {warning}" for warning in result.warnings]
    if verbose or result.count("failed") or result.count("error"):
        for name, output in result.output.items():
            lines.append(f"--- pytest output ({name}) ---\n{output}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="show pytest's output")
    parser.add_argument("--runs", type=int, default=1, help="run the suite this many times")
    args = parser.parse_args(argv)
    if not suite_dir().is_dir():
        print(f"{suite_dir()} is missing; fetch it with: {FETCH_COMMAND}", file=sys.stderr)
        return 2
    status = 0
    for run in range(1, args.runs + 1):
        with RedisServerFactory() as factory:
            result = run_suite(factory)
        if args.runs > 1:
            print(f"=== run {run} of {args.runs}")
        print(summary(result, verbose=args.verbose))
        if result.count("failed") or result.count("error"):
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
