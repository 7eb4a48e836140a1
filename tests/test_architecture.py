"""The house rules of the package, read from its source: every import points down the floors
the README documents, no two modules import each other, a wing's private modules are used only
inside it, one function compresses from the dense model, and functions stay short."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "admmsearch"

#: The floors, lowest first (README, "The engine"): a module imports only from its own floor or
#: below. Names are top-level modules or packages under admmsearch.
FLOORS = (
    ("errors", "record", "redact", "timing", "validation"),
    ("settings", "plan", "constraints", "names", "registry", "normalise", "fidelity"),
    ("data", "models", "hooks", "tracing", "fold", "masking", "admm", "train"),
    ("packed",),
    ("pipeline",),
    ("config",),
    ("metrics", "tensorfile", "dense", "stage_cache", "settings_file", "preflight", "tracking")
    + ("locations",),
    ("runtime",),
    ("compression",),
    ("deploy",),
    ("search",),
    ("ui",),
    ("cli", "options", "console", "__main__"),
)
FLOOR = {name: level for level, names in enumerate(FLOORS) for name in names}
WINGS = ("packed", "deploy", "runtime", "ui")


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[str]:
    """The admmsearch modules ``path`` imports (relative to admmsearch), anywhere in it:
    at the top, inside functions, and for type checkers alike."""
    here = _module(path).split(".") if _module(path) else []
    base = here if path.name == "__init__.py" else here[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            up = base[: len(base) - (node.level - 1)]
            target = ".".join([*up, *([node.module] if node.module else [])])
            names = [a.name for a in node.names] if not node.module else [""]
            for name in names:
                yield f"{target}.{name}".strip(".") if name else target
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("admmsearch."):
            yield node.module.removeprefix("admmsearch.")


MODULES = {_module(p): sorted(set(_imports(p))) for p in PACKAGE.rglob("*.py")}


def _top(module: str) -> str:
    return module.split(".")[0] if module else ""


def test_every_module_has_a_floor() -> None:
    missing = sorted({_top(m) for m in MODULES if m and _top(m) not in FLOOR})
    assert not missing, f"modules on no floor (add them to FLOORS and the README): {missing}"


def test_no_module_imports_one_above_it() -> None:
    upward = [
        f"{module} -> {target}"
        for module, targets in MODULES.items()
        if module
        for target in targets
        if _top(target) in FLOOR and FLOOR[_top(target)] > FLOOR[_top(module)]
    ]
    assert not upward


def _edges() -> dict[str, set[str]]:
    known = set(MODULES)
    edges: dict[str, set[str]] = {}
    for module, targets in MODULES.items():
        for target in targets:
            while target and target not in known:  # a name imported from a module
                target = target.rpartition(".")[0]
            if target and target != module and not module.startswith(f"{target}."):
                edges.setdefault(module, set()).add(target)
    return edges


def test_no_two_modules_import_each_other_nor_any_circle() -> None:
    edges, state, cycles = _edges(), {}, []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [module])
    # a package's __init__ importing its own modules is how a wing names its public face
    cycles = [c for c in cycles if not _within_one_package(c)]
    assert not cycles


def _within_one_package(cycle: str) -> bool:
    nodes = cycle.split(" -> ")
    return any(all(n == p or n.startswith(f"{p}.") for n in nodes) for p in nodes)


@pytest.mark.parametrize("wing", WINGS)
def test_a_wings_private_modules_are_used_only_inside_it(wing: str) -> None:
    outside = [
        f"{module} -> {target}"
        for module, targets in MODULES.items()
        if _top(module) != wing
        for target in targets
        if target.startswith(f"{wing}._")
    ]
    assert not outside


def _calls(path: Path, names: set[str]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if name in names:
                found.add(name)
    return found


def test_one_function_compresses_from_the_dense_model() -> None:
    """Only compression.py runs the pipeline's phases and packs the result (the pipeline's
    own ``run_pipeline`` composes them for library users; the dense cache packs the dense
    model, uncompressed, for its size)."""
    phases = {"prune_phase", "extend_retraining", "quantize_phase", "run_pipeline"}
    phases |= {"encode_model", "pack_model"}
    callers = {
        _module(p): _calls(p, phases)
        for p in PACKAGE.rglob("*.py")
        if _calls(p, phases) and not _module(p).startswith("packed")
    }
    assert callers == {
        "compression": {"prune_phase", "extend_retraining", "quantize_phase", "encode_model"},
        "pipeline": {"prune_phase", "quantize_phase"},
        "dense": {"encode_model"},
    }


def _length(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from ``def`` to the end, its docstring not counted."""
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    is_doc = isinstance(first, ast.Expr) and isinstance(
        getattr(first, "value", None), ast.Constant
    )
    if is_doc and isinstance(first.value.value, str):
        lines -= first.end_lineno - first.lineno + 1
    return lines


def test_no_function_is_over_40_lines() -> None:
    long = [
        f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({_length(node)} lines)"
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _length(node) > 40
    ]
    assert not long
