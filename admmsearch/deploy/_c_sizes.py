"""Flash and RAM of a C export as a compiler lays it out: code, constant data, RAM, stack.

:func:`measure` compiles ``admm_model.c`` to an object file (``-std=c99 -Os``, one section per
function and per array: ``-ffunction-sections -fdata-sections``) and sums its sections by kind
(binutils' ``size -A``): ``.text*`` is code, ``.rodata*`` (and a host's ``.data.rel.ro*``)
constant data (the arrays of the payload and the small tables beside them), ``.data*`` and
``.bss*`` RAM (the activation arena, and the layer buffer of the decoded path). The stack
bound is the deepest path from ``admm_predict`` (or ``admm_decode_layer`` without it) through
the call graph GCC writes with ``-fcallgraph-info=su``, each function's frame from
``-fstack-usage``; the functions of other files that it calls (``expf``, ``sqrtf``) are named,
their frames not counted.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ExportError

__all__ = ["TARGETS", "CSizes", "Target", "choose_target", "measure"]


@dataclass(frozen=True)
class Target:
    """A compiler, its flags for a device, and the binutils ``size`` that reads its objects."""

    compiler: str
    flags: tuple[str, ...]
    size_tool: str
    device: str


TARGETS = {
    "cortex-m4": Target(
        "arm-none-eabi-gcc",
        ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
        "arm-none-eabi-size",
        "a Cortex-M4F",
    ),
    "host": Target("gcc", (), "size", "this computer"),
}
_COMMON = ("-std=c99", "-Os", "-ffunction-sections", "-fdata-sections", "-c")
_PROBES = ("-fstack-usage", "-fcallgraph-info=su")


@dataclass(frozen=True)
class CSizes:
    """Bytes of one compiled export (see the module's docstring)."""

    target: str
    command: str
    code_bytes: int
    const_bytes: int
    ram_bytes: int
    stack_bytes: int
    external: tuple[str, ...]

    @property
    def device(self) -> str:
        return TARGETS[self.target].device


def choose_target(name: str) -> str | None:
    """``auto``: ``cortex-m4`` when ``arm-none-eabi-gcc`` is on the PATH, else ``host`` when
    ``gcc`` is, else None; ``none``: None; a target's name: itself.

    Raises:
        ExportError: an unknown name.
    """
    if name == "none":
        return None
    if name != "auto":
        if name not in TARGETS:
            raise ExportError(f"unknown target {name!r}; known: auto, none, {', '.join(TARGETS)}")
        return name
    found = [t for t, spec in TARGETS.items() if shutil.which(spec.compiler)]
    return found[0] if found else None


def measure(source: Path, target: str, defines: tuple[str, ...] = ()) -> CSizes:
    """Compile ``source`` (its header beside it) for ``target`` and measure it.

    Raises:
        ExportError: the compiler or ``size`` is missing or fails.
    """
    spec = TARGETS[target]
    with tempfile.TemporaryDirectory() as folder:
        obj = Path(folder) / "admm_model.o"
        args = [spec.compiler, *_COMMON, *spec.flags, *_PROBES, *defines, "-I", str(source.parent)]
        _run([*args, "-o", str(obj), str(source)], spec.compiler)
        sections = _sections(_run([spec.size_tool, "-A", str(obj)], spec.size_tool))
        frames, calls = _call_graph(obj.with_suffix(".ci").read_text())
    root = "admm_predict" if "admm_predict" in frames else "admm_decode_layer"
    stack, external = _deepest(root, frames, calls, set())
    command = " ".join([spec.compiler, "-std=c99", "-Os", *spec.flags, *defines])
    kinds = [(_kind(name), size) for name, size in sections]
    return CSizes(
        target,
        command,
        *(sum(size for kind, size in kinds if kind == k) for k in ("code", "const", "ram")),
        stack,
        tuple(sorted(external)),
    )


def _kind(section: str) -> str:
    """``code``, ``const`` (also ``.data.rel.ro``: tables of pointers, read-only once a
    position-independent program is loaded; ``.rodata`` on a microcontroller) or ``ram``."""
    if section.startswith(".text"):
        return "code"
    if section.startswith((".rodata", ".data.rel.ro")):
        return "const"
    return "ram" if section.startswith((".data", ".bss")) else "other"


def _run(args: list[str], tool: str) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise ExportError(f"cannot run {tool} to measure the C export: {exc}") from None
    if done.returncode:
        first = (done.stderr.strip().splitlines() or ["no message"])[0]
        raise ExportError(f"{tool} failed on the C export: {first}")
    return done.stdout


def _sections(table: str) -> list[tuple[str, int]]:
    """``(name, bytes)`` of each section in ``size -A``'s table."""
    rows = (line.split() for line in table.splitlines())
    return [(row[0], int(row[1])) for row in rows if len(row) == 3 and row[1].isdigit()]


def _call_graph(text: str) -> tuple[dict[str, int | None], dict[str, list[str]]]:
    """Each function's frame (None for one of another file) and callees, from a ``.ci`` file."""
    frames: dict[str, int | None] = {}
    for name, label in re.findall(r'node: \{ title: "([^"]+)" label: "([^"]*)"', text):
        found = re.search(r"\\n(\d+) bytes", label)
        frames[name] = int(found.group(1)) if found else None
    calls: dict[str, list[str]] = {}
    for source, callee in re.findall(
        r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"', text
    ):
        calls.setdefault(source, []).append(callee)
    return frames, calls


def _deepest(
    name: str, frames: dict[str, int | None], calls: dict[str, list[str]], path: set[str]
) -> tuple[int, set[str]]:
    """The largest sum of frames on a call path from ``name`` (no recursion in the export), and
    the functions of other files met on the way."""
    if frames.get(name) is None:
        return 0, {name}
    deepest, external = 0, set()
    for callee in calls.get(name, []):
        if callee in path:
            continue
        depth, met = _deepest(callee, frames, calls, path | {name})
        deepest, external = max(deepest, depth), external | met
    return frames[name] + deepest, external
