"""requirements/peers.lock: the peers' sdists whose test suites run against towpath."""

from __future__ import annotations

import re
from pathlib import Path

from tests.peers import channels_redis_suite as suite

ROOT = Path(__file__).resolve().parents[2]
PEERS_LOCK = (ROOT / "requirements" / "peers.lock").read_text()
DEV_LOCK = (ROOT / "requirements" / "dev.lock").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()


def _pin(lock: str, name: str) -> tuple[str, list[str]]:
    """(version, hashes) of ``name``'s pin in a lock file's text."""
    match = re.search(
        rf"^{re.escape(name)}==(\S+)((?:\s*\\\s*--hash=sha256:[0-9a-f]{{64}})+)", lock, re.M
    )
    assert match, f"{name} is not pinned with hashes"
    return match.group(1), re.findall(r"sha256:([0-9a-f]{64})", match.group(2))


def test_the_suite_is_the_release_the_benchmarks_install() -> None:
    """One hash: the sdist of the very release dev.lock installs (uv locked it from PyPI)."""
    version, hashes = _pin(PEERS_LOCK, "channels-redis")
    assert f"channels_redis-{version}" == suite.PEER
    assert len(hashes) == 1
    dev_version, dev_hashes = _pin(DEV_LOCK, "channels-redis")
    assert dev_version == version
    assert hashes[0] in dev_hashes


def test_make_peers_downloads_sdists_checked_against_the_hashes() -> None:
    assert "--require-hashes -r requirements/peers.lock" in MAKEFILE
    assert "--no-deps --no-binary :all:" in MAKEFILE
    assert re.search(r"^pytest: .*\$\(VENV\)/peers/\.stamp", MAKEFILE, re.M)
