"""The committed lock files are what `make run` / `make test` install: complete, hashed, in step
with pyproject.toml, and (in the Makefile's venv) actually installed."""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DEV_LOCK = ROOT / "requirements" / "dev.lock"
RUN_LOCK = ROOT / "requirements" / "run.lock"
MAKEFILE = (ROOT / "Makefile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _extras() -> list[str]:
    match = re.search(r"^EXTRAS\s*:=\s*(\S+)$", MAKEFILE, re.M)
    assert match, "Makefile: EXTRAS := ... not found"
    return match.group(1).split(",")


def _entries(lock: Path) -> list[tuple[Requirement, list[str]]]:
    """(requirement line, its hashes) for every pin of a lock file."""
    entries: list[tuple[Requirement, list[str]]] = []
    for block in re.split(r"\n(?=\S)", lock.read_text()):
        if not block or block.startswith("#"):
            continue
        head = block.split("\\", 1)[0].strip()
        entries.append((Requirement(head), re.findall(r"--hash=sha256:([0-9a-f]{64})", block)))
    return entries


def _pins(lock: Path, environment: dict[str, str] | None = None) -> dict[str, str]:
    """name -> version of the pins that apply to ``environment`` (this interpreter's)."""
    env = environment or default_environment()
    pins = {}
    for requirement, _ in _entries(lock):
        if requirement.marker is None or requirement.marker.evaluate(env):
            (spec,) = requirement.specifier
            pins[canonicalize_name(requirement.name)] = spec.version
    return pins


@pytest.mark.parametrize("lock", [DEV_LOCK, RUN_LOCK], ids=["dev", "run"])
def test_every_pin_is_exact_and_hashed(lock: Path) -> None:
    entries = _entries(lock)
    assert entries, f"{lock} is empty"
    for requirement, hashes in entries:
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"{lock.name}: {requirement} is not an exact pin"
        assert hashes, f"{lock.name}: {requirement} has no --hash (run `make lock`)"


@pytest.mark.parametrize("python", ["3.11", "3.12", "3.13"])
def test_dev_lock_satisfies_pyproject(python: str) -> None:
    """Every dependency pyproject.toml asks for (with the Makefile's extras) is pinned, at a
    version inside its range, for each Python the lock is made for: a stale lock after an edit
    of pyproject.toml fails here instead of in a newcomer's install."""
    env = {**default_environment(), "python_version": python, "python_full_version": f"{python}.0"}
    pins = _pins(DEV_LOCK, env)
    wanted = list(PYPROJECT["project"]["dependencies"])
    for extra in _extras():
        wanted += PYPROJECT["project"]["optional-dependencies"][extra]
    for line in wanted:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate(env):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in {DEV_LOCK.name}: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{DEV_LOCK.name} pins {name}=={pins[name]}, outside {requirement}: run `make lock`"
        )


def test_run_lock_is_the_runtime_part_of_the_dev_lock() -> None:
    """`make run` installs a subset of what `make test` does, at the same versions, so one venv
    can hold both; and it is small: towpath's own dependencies, not the test toolchain."""
    run, dev = _pins(RUN_LOCK), _pins(DEV_LOCK)
    for requirement in PYPROJECT["project"]["dependencies"]:
        assert canonicalize_name(Requirement(requirement).name) in run
    for name, version in run.items():
        assert dev.get(name) == version, f"run.lock {name}=={version}, dev.lock {dev.get(name)}"
    for tool in ("pytest", "mypy", "ruff", "uvicorn", "playwright", "matplotlib"):
        assert tool not in run, f"{tool} is a test tool; `make run` should not install it"


def test_the_makefile_installs_from_the_locks_with_hashes() -> None:
    assert "--require-hashes --no-deps -r requirements/run.lock" in MAKEFILE
    assert "--require-hashes --no-deps -r requirements/dev.lock" in MAKEFILE
    # the editable install of towpath itself may not pull anything from outside the lock
    assert "--no-deps --no-build-isolation -e ." in MAKEFILE


def test_this_venv_holds_exactly_the_locked_versions() -> None:
    """In the venv `make test` built, each installed distribution is the locked version: the
    suite ran against what the lock says. (`make test-latest`'s venv is exempt: it is unlocked
    on purpose; so is any venv the Makefile did not build.)"""
    prefix = Path(sys.prefix)
    if (prefix / "latest-versions.txt").exists():
        pytest.skip("make test-latest: the newest releases, not the lock")
    if not (prefix / ".dev-stamp").exists():
        pytest.skip(f"{prefix} was not built by `make test` from the lock")
    wrong = {}
    for name, version in _pins(DEV_LOCK).items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[name] = (version, installed)
    assert not wrong, f"installed versions differ from {DEV_LOCK.name} (locked, installed): {wrong}"


@pytest.mark.parametrize(
    "module",
    [
        "daphne.server",
        "uvicorn",
        "hypercorn.asyncio",
        "granian",
        "channels_redis.core",
        "fast_channels",
    ],
)
def test_the_locked_peers_import(module: str) -> None:
    """The peers the benchmarks and the drop-in tests run import together: a lock that pairs
    incompatible releases (pyOpenSSL 22 beside cryptography 51 broke daphne) fails here."""
    __import__(module)
