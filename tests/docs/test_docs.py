"""The docs stay true to the code: docs/cli.md is exactly what scripts/cli_reference.py renders
from the click commands, and every relative link in README.md and docs/*.md points at a file
that exists (and, for a Markdown file, at a heading that exists). Fast: no process, no network.

When the CLI test fails, regenerate the page: ``.venv/bin/python scripts/cli_reference.py``.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from towpath.config import import_from_string

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
REGENERATE = "run `.venv/bin/python scripts/cli_reference.py` to regenerate docs/cli.md"


def _cli_reference() -> ModuleType:
    path = ROOT / "scripts" / "cli_reference.py"
    spec = importlib.util.spec_from_file_location("cli_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("cli_reference", module)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_up_to_date() -> None:
    expected = _cli_reference().render()
    current = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    if current != expected:
        diff = difflib.unified_diff(
            current.splitlines(), expected.splitlines(), "docs/cli.md", "rendered", lineterm=""
        )
        pytest.fail(f"docs/cli.md is out of date: {REGENERATE}\n" + "\n".join(list(diff)[:40]))


def test_cli_reference_names_every_command_and_option() -> None:
    module = _cli_reference()
    page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    options = module._options(module.load_cli())
    assert {path for path, _ in options} >= {
        "towpath serve",
        "towpath runworker",
        "towpath runserver",
        "towpath check",
    }
    for path, option in options:
        assert f"## `{path}`" in page, f"{path} has no section in docs/cli.md: {REGENERATE}"
        for name in option.opts + option.secondary_opts:
            assert f"{name}" in page, f"{path} {name} is missing from docs/cli.md: {REGENERATE}"


def test_cli_reference_check_mode_reports_a_stale_page(tmp_path: Path) -> None:
    module = _cli_reference()
    stale = tmp_path / "cli.md"
    stale.write_text("# old\n", encoding="utf-8")
    assert module.main(["--check", "--output", str(stale)]) == 1
    assert module.main(["--output", str(stale)]) == 0
    assert module.main(["--check", "--output", str(stale)]) == 0


# -- links -------------------------------------------------------------------------------------

_FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`+[^`\n]*`+")
_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]"  # [text] or ![alt], one level of nested brackets
    r"\(\s*<?([^)\s>]+)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)"  # (target "title")
)
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)


def links(markdown: str) -> Iterator[str]:
    """Link targets of ``[text](target)`` and ``![alt](target)``, outside code."""
    prose = _CODE_SPAN.sub("", _FENCE.sub("", markdown))
    for match in _LINK.finditer(prose):
        yield match.group(1)


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, and a
    ``-1``, ``-2`` suffix for repeated headings."""
    seen: dict[str, int] = {}
    result = set()
    for heading in _HEADING.findall(_FENCE.sub("", markdown)):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def test_link_helpers_find_links_and_anchors() -> None:
    text = (
        "See [a](docs/a.md) and ![plot](b.png 'title'), [web](https://x.org), [c](#top).\n"
        "`[not](code.md)`\n```\n[not](fenced.md)\n```\n## The `serve` command\n## Same\n## Same\n"
    )
    assert list(links(text)) == ["docs/a.md", "b.png", "https://x.org", "#top"]
    assert anchors(text) == {"the-serve-command", "same", "same-1"}
    assert "mixing-with-channels_redis" in anchors("### Mixing with channels_redis\n")


@pytest.mark.parametrize("document", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_existing_files(document: Path) -> None:
    broken = []
    for target in links(document.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue  # https:, mailto:
        path_part, _, anchor = target.partition("#")
        path = (document.parent / path_part).resolve() if path_part else document
        if not path.exists():
            broken.append(f"{target} (no such file)")
        elif (
            anchor
            and path.suffix == ".md"
            and path.is_file()
            and anchor not in anchors(path.read_text(encoding="utf-8"))
        ):
            broken.append(f"{target} (no heading with that anchor in {path.name})")
    assert not broken, f"{document.relative_to(ROOT)}: broken links: {broken}"


# -- layer options -----------------------------------------------------------------------------

LAYER_DOCS = {
    "towpath.layers.memory:InMemoryChannelLayer": "layers.md",
    "towpath.layers.ipc.core:IPCChannelLayer": "ipc.md",
    "towpath.layers.rabbitmq.core:RabbitMQChannelLayer": "rabbitmq.md",
    "towpath.layers.redis.core:RedisChannelLayer": "redis.md",
    "towpath.layers.redis.pubsub:RedisPubSubChannelLayer": "redis-pubsub.md",
}


@pytest.mark.parametrize("backend", sorted(LAYER_DOCS))
def test_every_layer_option_is_documented(backend: str) -> None:
    """Each keyword a layer's class takes (its CONFIG options) is named in its page and in the
    options-by-layer table of docs/layers.md."""
    parameters = inspect.signature(import_from_string(backend)).parameters
    options = [name for name, p in parameters.items() if p.kind is not p.VAR_KEYWORD]
    page = (ROOT / "docs" / LAYER_DOCS[backend]).read_text(encoding="utf-8")
    overview = (ROOT / "docs" / "layers.md").read_text(encoding="utf-8")
    table = overview[overview.index("### Options by layer") :]
    missing = [name for name in options if f"`{name}`" not in page]
    assert not missing, f"docs/{LAYER_DOCS[backend]} does not document {missing} of {backend}"
    missing = [name for name in options if f"`{name}`" not in table]
    assert not missing, f"docs/layers.md's options-by-layer table lacks {missing} of {backend}"
