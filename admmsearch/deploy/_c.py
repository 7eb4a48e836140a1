"""C99 export of a packed model for microcontrollers: data, a decoder, and inference.

``export_c`` writes ``admm_model.h`` and ``admm_model.c`` into a folder. The source holds each
compressed layer's stream exactly as in the ``.admm`` payload (codes, codebook or scale, gap or
CSR index) as a ``const uint8_t`` array with its descriptor (:mod:`._c_runtime`), every
other tensor as a ``const float`` array (exact hexadecimal literals) or raw bytes, the input
normalisation, and the portable decoder ``admm_decode_layer``. So the arrays' flash size is the
payload's, the storage accounting plus byte padding.

For every network whose recorded graph (:mod:`admmsearch.graph`) is made of the supported
operations it also writes ``int admm_predict(const float *input, float *logits)``
(:mod:`admmsearch.c_network`), which takes one raw sample, applies the normalisation and runs
the graph with the convolution and linear kernels reading each layer's weights straight from
its stream: its RAM is the activation arena and the stack. ``decoded=True`` makes the default
the decode-whole-layer path (faster, one more buffer of the largest layer). Beside them goes a
test harness ``main.c`` that reads raw samples from a file (:func:`write_samples`) and prints
the accuracy, as ``admmsearch predict`` does. Any other network gets the data and decoder, and
the export says why it got no ``admm_predict`` (each unsupported operation by module path).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DatasetError, ExportError, PackError
from ..packed import (
    NetworkGraph,
    PackedFile,
    StreamMeta,
    csr_layout,
    load_state,
    read_model_file,
    trace_graph,
)
from ._c_network import CNetwork, inference_problems, network_source
from ._c_runtime import DECODER, HARNESS, HEADER_TYPES, KERNELS, WALKER
from ._c_sizes import CSizes, choose_target, measure
from ._predict import as_inputs, read_arrays, rebuild

__all__ = ["CInfo", "export_c", "write_samples"]

_ENCODING = {"dense": "ADMM_DENSE", "gap": "ADMM_GAP", "csr": "ADMM_CSR"}
_CODING = {"raw": "ADMM_VALUES_RAW", "codebook": "ADMM_CODEBOOK", "uniform": "ADMM_UNIFORM"}


@dataclass(frozen=True)
class CInfo:
    """What was written, how big its arrays and arena are, and what a compiler measured."""

    header: Path
    source: Path
    flash_bytes: int  # the arrays of streams and tensors: the .admm payload
    accounted_bits: int  # the storage accounting of the same (before byte padding)
    inference: bool  # admm_predict was generated
    problems: tuple[str, ...] = ()  # why it was not
    operations: int = 0
    arena_floats: int = 0
    decoded: bool = False
    layer_floats: int = 0  # the largest compressed layer: the decoded path's buffer
    harness: Path | None = None
    samples: tuple[Path, int, str] | None = None  # the file, its samples, where they came from
    sizes: CSizes | None = None

    def summary(self) -> str:
        """A few lines: the files, the arrays, RAM, and the measured sizes."""
        if self.inference:
            reads = "layers decoded whole" if self.decoded else "weights read from the streams"
            what = f"with admm_predict, {self.operations} operations, {reads}"
        else:
            what = "decoder only, no admm_predict: " + "; ".join(self.problems)
        lines = [
            f"wrote {self.header} and {self.source} ({what}): flash arrays {self.flash_bytes} "
            f"bytes = the .admm payload (accounted {self.accounted_bits} bits, "
            f"{math.ceil(self.accounted_bits / 8)} bytes before per-stream byte padding)"
        ]
        if self.inference:
            layer = f"{4 * self.layer_floats} bytes ({self.layer_floats} floats)"
            buffer = f" + the largest layer decoded, {layer}" if self.decoded else ""
            lines.append(
                f"RAM: activation arena {4 * self.arena_floats} bytes ({self.arena_floats} "
                f"floats, planned from the graph){buffer} + the stack"
            )
        lines.append(_sizes_line(self.sizes))
        if self.harness is not None:
            lines.append(f"test harness: {self.harness} (build and run: see its first lines)")
        if self.samples is not None:
            path, count, origin = self.samples
            lines.append(f"wrote {path}: {count} samples of {origin}")
        return "\n".join(lines)


def _sizes_line(sizes: CSizes | None) -> str:
    if sizes is None:
        return "code and stack not measured (--measure cortex-m4 or host; needs the compiler)"
    external = f" plus {', '.join(sizes.external)}'s own" if sizes.external else ""
    return (
        f"for {sizes.device} ({sizes.command}): flash {sizes.const_bytes} bytes of constant "
        f"data (arrays and tables) + {sizes.code_bytes} bytes of code; RAM {sizes.ram_bytes} "
        f"bytes + at most {sizes.stack_bytes} bytes of stack{external}"
    )


def export_c(
    model_file: str | Path,
    folder: str | Path,
    *,
    decoded: bool = False,
    trust_code: bool = False,
    samples: str | Path | None = None,
    target: str = "none",
) -> CInfo:
    """Write ``admm_model.h``, ``admm_model.c`` (and ``main.c`` with inference) into ``folder``.

    Only the file is read (nothing is imported or run), except for a format 2 file, which
    records no graph: its network is rebuilt and traced, a registered one always, user code
    only with ``trust_code``. ``decoded`` makes ``ADMM_DECODE_LAYERS`` default to 1;
    ``samples``, a ``.npz``, is written as ``samples.bin`` for ``main.c``
    (:func:`write_samples`); ``target`` (``cortex-m4``, ``host``, ``auto``: the first whose
    compiler is installed, ``none``) says for what the compiled sizes are measured.

    Raises:
        PackError: the packed file cannot be read (damaged, truncated, another version).
        ExportError: the folder cannot be written, the recorded graph contradicts itself, or
            the compiler fails.
        DatasetError: the samples do not fit the model.
    """
    packed = read_model_file(model_file)
    names = _c_names(packed)
    graph = _graph(packed, trust_code)
    problems = tuple(inference_problems(packed, graph))
    network = None if problems else _network(packed, graph, names)
    folder = Path(folder)
    harness = _write_files(folder, packed, names, network, decoded, Path(model_file).name)
    written, sizes = _extras(folder, packed, samples, target)
    return CInfo(
        folder / "admm_model.h", folder / "admm_model.c", sum(map(len, packed.blobs.values())),
        sum(stream.bits for stream in packed.streams), network is not None, problems,
        network.operations if network else 0, network.plan.floats if network else 0, decoded,
        _largest(packed), harness, written, sizes,
    )  # fmt: skip


def _largest(packed: PackedFile) -> int:
    return max((s.numel for s in packed.streams if s.encoding != "raw"), default=1)


def _extras(
    folder: Path, packed: PackedFile, samples: str | Path | None, target: str
) -> tuple[tuple[Path, int, str] | None, CSizes | None]:
    """The samples file written (path, count, origin) and the measured sizes, if asked."""
    written = None
    if samples is not None:
        count, origin = write_samples(samples, folder / "samples.bin", packed.meta.input_shape)
        written = (folder / "samples.bin", count, origin)
    chosen = choose_target(target)
    return written, measure(folder / "admm_model.c", chosen) if chosen else None


def write_samples(
    data: str | Path, path: str | Path, input_shape: tuple[int, ...]
) -> tuple[int, str]:
    """Write a ``.npz``'s raw inputs and labels as ``main.c`` reads them.

    One record per sample: its ``prod(input_shape)`` float32 inputs (as in the file, channels
    first; not normalised) then its int32 label, little-endian. The same as::

        x = x_test.astype("<f4").reshape(len(x_test), -1)
        np.hstack([x.view("<i4"), y_test.astype("<i4").reshape(-1, 1)]).tofile("samples.bin")

    Returns:
        The number of samples and where they came from (``"data.npz (x_test, y_test)"``).

    Raises:
        DatasetError: the file cannot be read, or its arrays do not fit the model.
    """
    x, y, keys = read_arrays(data)
    inputs = as_inputs(x, input_shape).numpy().reshape(len(x), -1).astype("<f4")
    labels = np.asarray(y).astype("<i4").reshape(-1, 1)
    if len(labels) != len(inputs):
        raise DatasetError(f"{data}: {len(inputs)} inputs but {len(labels)} labels")
    try:
        np.hstack([inputs.view("<i4"), labels]).tofile(path)
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc}") from None
    return len(labels), f"{Path(data).name} ({keys[0]}, {keys[1]})"


def _graph(packed: PackedFile, trust_code: bool) -> NetworkGraph:
    """The file's graph; a format 2 file's network is rebuilt and traced now."""
    if packed.graph.recorded or packed.version >= 3:
        return packed.graph
    try:
        model = rebuild(packed.meta, packed.path, trust_code=trust_code)
        load_state(model, packed.state, packed.path)
    except PackError as exc:
        return NetworkGraph.absent(f"{packed.graph.missing}; tracing its network instead: {exc}")
    return trace_graph(model, packed.meta.input_shape, list(packed.state))


def _network(packed: PackedFile, graph: NetworkGraph, names: dict[str, str]) -> CNetwork:
    try:
        return network_source(packed, graph, names)
    except ValueError as exc:
        raise ExportError(f"{packed.path}: its graph is inconsistent: {exc}") from None


def _write_files(
    folder: Path,
    packed: PackedFile,
    names: dict[str, str],
    network: CNetwork | None,
    decoded: bool,
    origin: str,
) -> Path | None:
    """Write the header, the source and (with a network) main.c; returns main.c's path."""
    harness = folder / "main.c" if network is not None else None
    texts = {
        folder / "admm_model.h": _header_text(packed, network, decoded),
        folder / "admm_model.c": _source_text(packed, names, network),
        **({harness: HARNESS} if harness else {}),
    }
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for path, text in texts.items():
            path.write_text(text.replace("{origin}", origin))
    except OSError as exc:
        raise ExportError(f"cannot write the C export into {folder}: {exc}") from None
    return harness


def _c_names(packed: PackedFile) -> dict[str, str]:
    """A C identifier per tensor key, unique."""
    names = {}
    for index, stream in enumerate(packed.streams):
        clean = re.sub(r"\W", "_", stream.key)
        names[stream.key] = f"admm_{clean}" if clean not in names.values() else f"admm_{index}"
    return names


def _header_text(packed: PackedFile, network: CNetwork | None, decoded: bool) -> str:
    coded = [s for s in packed.streams if s.encoding != "raw"]
    meta = packed.meta
    lines = [
        "/* Generated by admmsearch from {origin}. */",
        "#ifndef ADMM_MODEL_H",
        "#define ADMM_MODEL_H",
        HEADER_TYPES,
        f"#define ADMM_NUM_LAYERS {len(coded)}",
        f"#define ADMM_NUM_TENSORS {len(packed.streams) - len(coded)}",
        f"#define ADMM_MAX_LAYER_NUMEL {_largest(packed)}",
        f"#define ADMM_FLASH_BYTES {sum(len(b) for b in packed.blobs.values())}u",
        f"#define ADMM_INPUT_SIZE {math.prod(meta.input_shape)}",
        f"#define ADMM_NUM_CLASSES {meta.num_classes}",
        "extern const admm_layer admm_layers[ADMM_NUM_LAYERS];",
        "extern const admm_tensor admm_tensors[];",
        *_normalisation_header(meta.normalisation, meta.input_shape),
    ]
    if network is not None:
        lines += _predict_header(network, decoded)
    return "\n".join([*lines, "#endif", ""])


def _predict_header(network: CNetwork, decoded: bool) -> list[str]:
    return [
        "/* admm_predict's RAM: the activation arena (planned from the graph), the stack and,",
        "   with ADMM_DECODE_LAYERS 1, a buffer of ADMM_MAX_LAYER_NUMEL floats. */",
        f"#define ADMM_ARENA_FLOATS {network.plan.floats}",
        "/* 0: the kernels read each layer's weights straight from its compressed stream;",
        "   1: each layer is decoded whole into a buffer first (faster, more RAM). */",
        "#ifndef ADMM_DECODE_LAYERS",
        f"#define ADMM_DECODE_LAYERS {int(decoded)}",
        "#endif",
        "/* One raw sample (ADMM_INPUT_SIZE floats, channels first) -> ADMM_NUM_CLASSES",
        "   logits; returns the predicted class, or -1 if a layer's stream is inconsistent. */",
        "int admm_predict(const float *input, float *logits);",
    ]


def _source_text(packed: PackedFile, names: dict[str, str], network: CNetwork | None) -> str:
    parts = [
        "/* Generated by admmsearch from {origin}. */\n",
        '#include "admm_model.h"\n',
        "#include <math.h>\n" if network is not None and network.uses_math else "",
        _data(packed, names),
        _normalisation(packed.meta.normalisation),
        DECODER,
    ]
    if network is not None:
        parts += [WALKER, *(KERNELS[name] for name in network.kernels), network.source]
    return "".join(parts)


def _data(packed: PackedFile, names: dict[str, str]) -> str:
    out, layers, tensors = [], [], []
    for stream in packed.streams:
        blob, name = packed.blobs[stream.key], names[stream.key]
        if stream.encoding != "raw":
            out.append(_bytes_array(name, blob))
            layers.append(_descriptor(stream, name, len(blob)))
            continue
        out.append(_raw_array(name, stream, packed.state[stream.key], blob))
        tensors.append(f'    {{"{stream.key}", {name}, {len(blob)}u}},')
    out.append(
        "const admm_layer admm_layers[ADMM_NUM_LAYERS] = {\n" + "\n".join(layers) + "\n};\n"
    )
    body = "\n".join(tensors) or '    {"", 0, 0u},'
    out.append("const admm_tensor admm_tensors[] = {\n" + body + "\n};\n")
    return "".join(out)


def _bytes_array(name: str, blob: bytes) -> str:
    rows = [", ".join(f"0x{b:02x}" for b in blob[i : i + 16]) for i in range(0, len(blob), 16)]
    body = ",\n    ".join(rows) or "0x00"
    return f"static const uint8_t {name}[{max(len(blob), 1)}] = {{\n    {body}\n}};\n"


def _raw_array(name: str, stream: StreamMeta, tensor: torch.Tensor, blob: bytes) -> str:
    values = tensor.reshape(-1).numpy()
    if stream.dtype != torch.float32 or not np.all(np.isfinite(values)) or values.size == 0:
        return _bytes_array(name, blob)
    rows = [
        ", ".join(f"{float(v).hex()}f" for v in values[i : i + 6])
        for i in range(0, values.size, 6)
    ]
    return f"static const float {name}[{values.size}] = {{\n    " + ",\n    ".join(rows) + "\n};\n"


def _descriptor(stream: StreamMeta, name: str, nbytes: int) -> str:
    rows, cols, pointer_bits, column_bits = csr_layout(stream.shape, stream.nonzeros)
    fields = [
        f'"{stream.key}"', f"{stream.numel}u", f"{rows}u", f"{cols}u",
        _ENCODING[stream.encoding], _CODING[stream.coding], f"{stream.width}u",
        f"{stream.gap_bits}u", f"{pointer_bits}u", f"{column_bits}u",
        f"{int(stream.zero_stored)}u", f"{stream.codebook_size}u", f"{stream.stride}u",
        f"{stream.nonzeros}u", f"{stream.fillers}u", name, f"{nbytes}u",
    ]  # fmt: skip
    return "    {" + ", ".join(fields) + "},"


def _normalisation(norm) -> str:
    if norm is None:
        return ""
    values = lambda xs: ", ".join(f"{float(np.float32(x)).hex()}f" for x in xs)  # noqa: E731
    return (
        f"const float admm_mean[ADMM_CHANNELS] = {{{values(norm.mean)}}};\n"
        f"const float admm_std[ADMM_CHANNELS] = {{{values(norm.std)}}};\n"
    )


def _normalisation_header(norm, input_shape: tuple[int, ...]) -> list[str]:
    if norm is None:
        return ["#define ADMM_NORMALISE 0"]
    plane = math.prod(input_shape[1:]) if len(input_shape) > 1 else 1
    return [
        "/* Raw inputs are fed as (x - admm_mean[c]) / admm_std[c], c the channel: the input's",
        "   entry i is in channel i / ADMM_PLANE % ADMM_CHANNELS. */",
        f"#define ADMM_NORMALISE 1\n#define ADMM_CHANNELS {norm.channels}",
        f"#define ADMM_PLANE {plane}",
        "extern const float admm_mean[ADMM_CHANNELS];",
        "extern const float admm_std[ADMM_CHANNELS];",
    ]
