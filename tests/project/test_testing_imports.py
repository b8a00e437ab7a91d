"""The test-only service launchers of ``towpath.testing`` (``services``: redis-server and
Sentinel; ``rabbitmq``: a broker; ``supervisor``: a supervisord stack) start and kill real
servers: nothing a user runs may import them. No module of towpath outside
``towpath/testing/``, and no example, imports them, nor names them in a string (as
``importlib.import_module`` would). Read from the source with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.imports import imported, module_name

ROOT = Path(__file__).resolve().parents[2]
LAUNCHERS = ("towpath.testing.services", "towpath.testing.rabbitmq", "towpath.testing.supervisor")


def launcher_uses(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """``module:line uses name`` for each import of one of :data:`LAUNCHERS` (or of a name
    inside one) in ``source``, and each string naming one."""
    names = imported(source, module, is_package=is_package)
    names += [
        (node.lineno, node.value)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]
    return [
        f"{module}:{line} uses {name}"
        for line, name in names
        if any(name == launcher or name.startswith(launcher + ".") for launcher in LAUNCHERS)
    ]


def user_modules() -> list[Path]:
    """towpath outside ``towpath/testing/``, and the examples."""
    package = ROOT / "towpath"
    paths = [p for p in package.rglob("*.py") if (package / "testing") not in p.parents]
    return sorted(paths + list((ROOT / "examples").rglob("*.py")))


def test_nothing_a_user_runs_imports_the_service_launchers() -> None:
    paths = user_modules()
    assert len(paths) > 50 and ROOT / "towpath" / "cli" / "__init__.py" in paths
    found = [
        problem
        for path in paths
        for problem in launcher_uses(
            path.read_text(encoding="utf-8"),
            module_name(path, ROOT),
            is_package=path.name == "__init__.py",
        )
    ]
    assert not found, "towpath.testing's service launchers are for tests only:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from towpath.testing.services import RedisServer\n", ["services.RedisServer"]),
        ("import towpath.testing.rabbitmq\n", ["rabbitmq"]),
        ("from towpath.testing import supervisor\n", ["supervisor"]),
        ("def f():\n    from ..testing.services import free_port\n", ["services.free_port"]),
        ("from .. import testing\nfrom ..testing import services\n", ["services"]),
        ("importlib.import_module('towpath.testing.supervisor')\n", ["supervisor"]),
        (
            "from towpath.testing import ChannelLayerConformance\n"
            "from towpath.testing.processes import towpath_serve\nimport towpath.testing\n",
            [],
        ),
    ],
)
def test_the_check_sees_every_form_of_use(source: str, expected: list[str]) -> None:
    """The check itself can fail: each way of spelling it is caught, by module and line."""
    found = launcher_uses(source, "towpath.cli.x")
    prefix = "towpath.testing."
    assert [problem.split(" uses ")[1].removeprefix(prefix) for problem in found] == expected
    assert all(problem.startswith("towpath.cli.x:") for problem in found)
