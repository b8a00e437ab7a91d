"""The two halves of a decoupled stack meet only through the layer and ``towpath.wire``.

No module under ``towpath/worker/``, ``towpath/consumers/`` or ``towpath/routing/`` imports
``towpath.interface`` (not even under ``TYPE_CHECKING``, not even inside a function), and
``towpath.wire`` imports nothing of towpath's. Read from the source with ``ast``, so an import
that only runs on some path counts too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.imports import imported
from tests.support.imports import module_name as support_module_name

PACKAGE = Path(__file__).resolve().parents[2] / "towpath"
#: the worker side: it may use towpath.wire, never the interface server
WORKER_SIDE = ("towpath.worker", "towpath.consumers", "towpath.routing")
FORBIDDEN = "towpath.interface"


def module_name(path: Path) -> str:
    return support_module_name(path, PACKAGE.parent)


def violations(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """``module:line imports name`` for each import of :data:`FORBIDDEN` in ``source``."""
    return [
        f"{module}:{line} imports {name}"
        for line, name in imported(source, module, is_package=is_package)
        if name == FORBIDDEN or name.startswith(FORBIDDEN + ".")
    ]


def worker_side_modules() -> list[Path]:
    paths = sorted(PACKAGE.rglob("*.py"))
    return [path for path in paths if module_name(path).startswith(WORKER_SIDE)]


def test_the_worker_side_never_imports_the_interface_server() -> None:
    modules = worker_side_modules()
    assert len(modules) > 10  # the walk found the package
    found = [
        problem
        for path in modules
        for problem in violations(
            path.read_text(encoding="utf-8"),
            module_name(path),
            is_package=path.name == "__init__.py",
        )
    ]
    assert not found, (
        "the worker side must not import towpath.interface (use towpath.wire, or compose "
        "above both halves as towpath/runserver.py does):\n" + "\n".join(found)
    )


def test_the_wire_module_imports_nothing_of_towpath() -> None:
    path = PACKAGE / "wire.py"
    names = [name for _, name in imported(path.read_text(encoding="utf-8"), "towpath.wire")]
    assert names  # it does import (typing, collections.abc)
    assert [name for name in names if name.split(".")[0] == "towpath"] == []


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        ("import towpath.interface.server\n", "towpath.worker.x", ["towpath.interface.server"]),
        ("from towpath import interface\n", "towpath.worker.x", ["towpath.interface"]),
        (
            "from towpath.interface import forwarding\n",
            "towpath.consumers.x",
            ["towpath.interface.forwarding"],
        ),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from towpath.interface.forwarding import ForwardingApp\n",
            "towpath.routing.x",
            ["towpath.interface.forwarding.ForwardingApp"],
        ),
        (
            "def f():\n    from ..interface import server\n",
            "towpath.worker.run",
            ["towpath.interface.server"],
        ),
        ("from .. import interface\n", "towpath.worker.run", ["towpath.interface"]),
        (
            "from towpath.wire import ABORT_EVENT\nimport towpath.interfaces\n",
            "towpath.worker.x",
            [],
        ),
    ],
)
def test_the_check_sees_every_form_of_import(source: str, module: str, expected: list[str]) -> None:
    """The check itself can fail: each way of spelling the import is caught, by module and line."""
    found = violations(source, module)
    assert [problem.split(" imports ")[1] for problem in found] == expected
    assert all(problem.startswith(f"{module}:") for problem in found)


def test_relative_imports_in_a_package_resolve_from_the_package() -> None:
    found = violations("from ..interface import server\n", "towpath.worker", is_package=True)
    assert found == ["towpath.worker:1 imports towpath.interface.server"]


FORWARDING = PACKAGE / "interface" / "forwarding"


def import_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """Module -> the modules of ``sources`` it imports (``sources``: module -> (its text, is a
    package)). An imported name belongs to the longest module of ``sources`` it starts with:
    ``from a.b import c`` is an import of ``a.b.c`` if that is one of them, else of ``a.b``."""
    graph: dict[str, set[str]] = {}
    for module, (source, is_package) in sources.items():
        targets = graph.setdefault(module, set())
        for _, name in imported(source, module, is_package=is_package):
            owners = [m for m in sources if name == m or name.startswith(m + ".")]
            if owners:
                owner = max(owners, key=len)
                if owner != module:
                    targets.add(owner)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` (``[a, b, ..., a]``), or ``[]``."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str]:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return []
        path.append(module)
        for target in sorted(graph.get(module, ())):
            cycle = visit(target)
            if cycle:
                return cycle
        path.pop()
        done.add(module)
        return []

    for module in sorted(graph):
        cycle = visit(module)
        if cycle:
            return cycle
    return []


def test_the_forwarding_package_has_no_import_cycle() -> None:
    """Its ``__init__`` composes the parts; no part imports it or, round about, itself (imports
    under ``TYPE_CHECKING`` count: they are how such cycles hide)."""
    sources = {
        module_name(path): (path.read_text(encoding="utf-8"), path.name == "__init__.py")
        for path in sorted(FORWARDING.rglob("*.py"))
    }
    assert len(sources) > 5  # the walk found the package
    graph = import_graph(sources)
    assert "towpath.interface.forwarding.affinity" in graph["towpath.interface.forwarding"]
    cycle = find_cycle(graph)
    assert not cycle, "import cycle in towpath.interface.forwarding: " + " -> ".join(cycle)


def test_the_cycle_check_sees_a_cycle_through_type_checking() -> None:
    sources = {
        "p": ("from p.a import A\n", True),
        "p.a": ("from p.b import B\n", False),
        "p.b": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from p import App\n",
            False,
        ),
        "p.c": ("from . import a\n", False),
    }
    graph = import_graph(sources)
    assert graph == {"p": {"p.a"}, "p.a": {"p.b"}, "p.b": {"p"}, "p.c": {"p.a"}}
    assert find_cycle(graph) == ["p", "p.a", "p.b", "p"]
    sources["p.b"] = ("from typing import TYPE_CHECKING\n", False)
    assert find_cycle(import_graph(sources)) == []


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The import cycles of ``graph``: its strongly connected parts of more than one module."""
    found: list[frozenset[str]] = []
    reached: dict[str, frozenset[str]] = {}
    for module in sorted(graph):
        if module in reached:
            continue
        # what ``module`` reaches and what reaches it back: the part it belongs to
        forward = _reach(graph, module)
        back = _reach({m: {t for t, ts in graph.items() if m in ts} for m in graph}, module)
        part = frozenset(forward & back)
        for member in part:
            reached[member] = part
        if len(part) > 1:
            found.append(part)
    return found


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_no_import_cycle_in_towpath() -> None:
    """No module of towpath imports itself round about (``TYPE_CHECKING`` imports count)."""
    sources = {
        module_name(path): (path.read_text(encoding="utf-8"), path.name == "__init__.py")
        for path in sorted(PACKAGE.rglob("*.py"))
    }
    assert len(sources) > 100  # the walk found the package
    found = sorted(sorted(part) for part in cycles(import_graph(sources)))
    assert not found, f"import cycle(s) in towpath: {found}"


def test_the_cycles_are_the_strongly_connected_parts() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}
    assert sorted(map(sorted, cycles(graph))) == [["a", "b", "c"], ["d", "e"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
