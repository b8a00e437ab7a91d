"""The tests are laid out as ``tests/README.md`` says, with one harness: every test module sits
in one of the README's directories (each a package), and no test module imports another test
module -- what tests share lives in ``tests/support/``. Read from the source with ``ast``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.imports import imported, module_name

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"


def layout_directories(readme: str) -> list[str]:
    """The directories a README lists, one a line: ``- `interface/protocol/` — ...``."""
    return [match.rstrip("/") for match in re.findall(r"^- `([a-z0-9_/]+/)`", readme, re.M)]


def misplaced(tests: Path, directories: list[str]) -> list[str]:
    """Each of ``directories`` (under ``tests``) that is not a package, and each test module
    under ``tests`` that is in none of them."""
    problems = [
        f"{directory}/ is not a package"
        for directory in directories
        if not (tests / directory / "__init__.py").is_file()
    ]
    problems += [
        f"{path.relative_to(tests).as_posix()} is outside the layout"
        for path in sorted(tests.rglob("test_*.py"))
        if path.parent.relative_to(tests).as_posix() not in directories
    ]
    return problems


def imports_of_tests(source: str, module: str, tests: set[str]) -> list[str]:
    """``module:line imports name`` for each import in ``source`` (the text of ``module``) of
    one of the test modules ``tests`` (dotted names), or of something inside one."""
    bare = {test.rpartition(".")[2] for test in tests}  # ``import test_x`` off sys.path
    found = []
    for line, name in imported(source, module):
        parts = name.split(".")
        prefixes = {".".join(parts[: i + 1]) for i in range(len(parts))}
        if prefixes & tests or parts[0] in bare:
            found.append(f"{module}:{line} imports {name}")
    return found


def test_every_test_module_is_in_a_directory_of_the_readme() -> None:
    directories = layout_directories((TESTS / "README.md").read_text(encoding="utf-8"))
    assert {"support", "interface/protocol", "e2e", "peers"} <= set(directories)
    problems = misplaced(TESTS, directories)
    assert not problems, "tests/ does not match tests/README.md:\n" + "\n".join(problems)


def test_no_test_module_imports_another() -> None:
    paths = sorted(TESTS.rglob("test_*.py"))
    tests = {module_name(path, ROOT) for path in paths}
    assert len(tests) > 90  # the walk found the tests
    found = [
        problem
        for path in [*paths, *sorted((TESTS / "support").rglob("*.py")), TESTS / "conftest.py"]
        for problem in imports_of_tests(
            path.read_text(encoding="utf-8"), module_name(path, ROOT), tests
        )
    ]
    assert not found, (
        "a test module imports another test module (put what they share in tests/support/):\n"
        + "\n".join(found)
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from tests.cli.test_cli import run\n", ["tests.cli.test_cli.run"]),
        ("import tests.cli.test_cli\n", ["tests.cli.test_cli"]),
        ("from tests.cli import test_cli\n", ["tests.cli.test_cli"]),
        ("from . import test_cli\n", ["tests.cli.test_cli"]),
        ("from .test_cli import run as go\n", ["tests.cli.test_cli.run"]),
        ("from ..cli.test_cli import run\n", ["tests.cli.test_cli.run"]),
        ("def f():\n    from tests.cli.test_cli import run\n", ["tests.cli.test_cli.run"]),
        ("from test_cli import run\n", ["test_cli.run"]),
        (
            "from tests.support.waiting import WAIT\nimport tests.cli\n"
            "from tests.cli.test_cli_more import x\n",
            [],
        ),
    ],
)
def test_the_import_check_sees_every_form_of_import(source: str, expected: list[str]) -> None:
    """The check itself can fail: each way of spelling such an import is caught, with its line."""
    found = imports_of_tests(source, "tests.cli.test_other", {"tests.cli.test_cli"})
    assert [problem.split(" imports ")[1] for problem in found] == expected
    assert all(problem.startswith("tests.cli.test_other:") for problem in found)


def test_the_layout_check_sees_what_is_out_of_place(tmp_path: Path) -> None:
    readme = "# tests\n\n- `support/` — helpers\n- `interface/protocol/` — protocols\n- `e2e/`\n"
    assert layout_directories(readme) == ["support", "interface/protocol", "e2e"]
    for directory in ("support", "interface/protocol", "other"):
        (tmp_path / directory).mkdir(parents=True)
        (tmp_path / directory / "__init__.py").write_text("")
    (tmp_path / "e2e").mkdir()  # no __init__.py
    for module in ("interface/protocol/test_a.py", "test_flat.py", "other/test_b.py"):
        (tmp_path / module).write_text("")
    assert misplaced(tmp_path, layout_directories(readme)) == [
        "e2e/ is not a package",
        "other/test_b.py is outside the layout",
        "test_flat.py is outside the layout",
    ]
