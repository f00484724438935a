"""The house's shape: data flows one way, so no module imports a later stage.

The stage order is defined here, once; README "Inside" draws the same graph. A module
may import only modules of strictly earlier stages (a package such as `store/` is one
stage, free inside itself). The sandbox stands apart: it imports nothing of the dialer,
and only the CLI starts it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "dialer"

# Earlier stages first; modules on one line share a stage and may not import each other.
STAGES: list[set[str]] = [
    {"model", "errors", "forked"},  # forked: what a forked child does first (imports nothing)
    {"cells"},
    {"config"},
    {"load"},
    {"zones"},
    {"law"},  # the law table imports nothing of the dialer; mapping checks state columns with it
    {"columns", "phones"},
    {"suppress", "optout"},  # optout: the opt-out list, appended to by follow.py
    {"mapping"},
    {"hours", "numbers", "pacing"},
    {"client"},
    {"store"},
    {"transitions"},
    {"caps"},
    {"bookkeeping"},
    {"send", "settle", "follow"},
    {"dispatch"},
    {"report", "page", "validate"},
    {"run", "progress"},
    {"cli"},
    {"entry"},
    {"__main__"},
]
SEPARATE = "sandbox"
RANK = {name: rank for rank, names in enumerate(STAGES) for name in names}


# Modules that are one stage split over two files (they may import each other).
PART_OF = {"workbook": "load"}  # the XLSX half of the loader


def unit(module: str) -> str:
    """`dialer.store.writer` -> `store`: the stage a module belongs to."""
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else "__init__"
    return PART_OF.get(name, name)


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """The dialer modules `path` imports, anywhere in it (imports inside functions too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("dialer."))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "dialer":
                found.update(f"dialer.{alias.name}" for alias in node.names)
            elif node.module.startswith("dialer."):
                found.add(node.module)
    return found


def edges() -> list[tuple[str, str]]:
    return sorted((module_name(path), target) for path in PACKAGE.rglob("*.py") for target in imports(path))


def test_every_module_has_a_stage() -> None:
    units = {unit(module_name(path)) for path in PACKAGE.rglob("*.py")} - {"__init__", SEPARATE}
    assert units - RANK.keys() == set(), "give each new module its place in STAGES"


def test_no_module_imports_a_later_stage_or_its_own() -> None:
    wrong = []
    for source, target in edges():
        a, b = unit(source), unit(target)
        if a == b or a == "__init__":
            continue  # inside one package
        if SEPARATE in (a, b):
            if b == SEPARATE and a != "cli":
                wrong.append(f"{source} -> {target}: only the CLI starts the sandbox")
            elif a == SEPARATE:
                wrong.append(f"{source} -> {target}: the sandbox imports nothing of the dialer")
            continue
        if RANK[b] >= RANK[a]:
            wrong.append(f"{source} -> {target}")
    assert wrong == []


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("dialer.store.sqlite", "dialer.report"),  # the journal no longer imports the report
        ("dialer.client", "dialer.store"),  # nor the client the journal
        ("dialer.cli", "dialer.dispatch"),  # the CLI goes through run.py
        ("dialer.cli", "dialer.store"),
        ("dialer.transitions", "dialer.store"),  # pure: no I/O
    ],
)
def test_edges_the_re_cut_removed_stay_removed(source: str, target: str) -> None:
    assert not [(s, t) for s, t in edges() if s == source and t.startswith(target)]


def test_the_checker_sees_an_upward_edge(tmp_path: Path) -> None:
    # The test above must be able to fail: an import of a later stage is an edge it finds.
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from dialer import run\n    import dialer.dispatch\n")
    assert imports(probe) == {"dialer.run", "dialer.dispatch"}
