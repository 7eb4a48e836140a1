"""The packed model file (``.admm``): its coding rules, the storage accounting and the file.

The storage accounting (:func:`model_storage`) counts the bits of every compressed weight by
the coding rules; :func:`pack_model` writes exactly those bits, behind a header that says how
to rebuild the network and records its graph (:class:`NetworkGraph`, traced by ``torch.fx``);
:func:`read_model_file` reads a file back with every check of ``docs/FORMAT.md``.
Implementation modules are private; this module names what is public.
"""

from __future__ import annotations

from ._accounting import LayerStorage, StorageReport, layer_storage, model_storage
from ._coding import csr_layout, distinct_values, uniform_levels
from ._format import (
    FORMAT_VERSION,
    MAGIC,
    MAX_ENTRIES,
    ModelMeta,
    PackedFile,
    PackInfo,
    encode_model,
    load_state,
    pack_model,
    read_model_file,
    read_packed,
    smallest_file_bits,
    unpack_into,
)
from ._graph import ELEMENTWISE, GraphNode, NetworkGraph
from ._graph_check import check_graph
from ._streams import StreamMeta
from ._tracing import trace_graph

__all__ = [
    "ELEMENTWISE",
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_ENTRIES",
    "GraphNode",
    "LayerStorage",
    "ModelMeta",
    "NetworkGraph",
    "PackInfo",
    "PackedFile",
    "StorageReport",
    "StreamMeta",
    "check_graph",
    "csr_layout",
    "distinct_values",
    "encode_model",
    "layer_storage",
    "load_state",
    "model_storage",
    "pack_model",
    "read_model_file",
    "read_packed",
    "smallest_file_bits",
    "trace_graph",
    "uniform_levels",
    "unpack_into",
]
