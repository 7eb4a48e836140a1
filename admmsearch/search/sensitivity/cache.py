"""The sensitivity cache: one JSON file per dense model and grid, shared by workers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from filelock import FileLock
from torch import nn

from ...config import UnitSpace
from ...data import DataSplits
from ...tensorfile import write_atomic
from .measure import Finetune, measure
from .table import Sensitivity

__all__ = ["cached_sensitivity", "sensitivity_key"]

_VERSION = 1  # bump when the measurement changes its result


def sensitivity_key(dense_fingerprint: str, units: Sequence[UnitSpace], **settings: Any) -> str:
    """sha256 hex of what determines a measurement: the dense model, the units and grid."""
    spec = {
        "v": _VERSION,
        "dense": dense_fingerprint,
        "units": [
            [u.name, list(u.layers), u.quantizer, u.structured, repr(u.keep), repr(u.levels)]
            for u in units
        ],
        **settings,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def cached_sensitivity(
    cache_dir: Path,
    dense_fingerprint: str,
    model: nn.Module,
    data: DataSplits,
    units: Sequence[UnitSpace],
    *,
    keep_points: int = 8,
    samples: int | None = None,
    index_format: str = "gap",
    finetune: Finetune | None = None,
    on_unit: Callable[[str, int, int], None] | None = None,
) -> Sensitivity:
    """:func:`measure`, or its cached result (``cache_dir/sensitivity-<key>.json``).

    Workers sharing ``cache_dir`` measure once: the first takes a lock file and measures, the
    others wait and read its result. A damaged cache file is measured again and rewritten.
    """
    settings = {"keep_points": keep_points, "samples": samples, "index_format": index_format}
    tuning = None if finetune is None else asdict(finetune)
    key = sensitivity_key(dense_fingerprint, units, **settings, finetune=tuning)
    path = Path(cache_dir) / f"sensitivity-{key[:24]}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        found = _read(path)
        if found is not None:
            return found
        result = measure(model, data, units, **settings, finetune=finetune, on_unit=on_unit)
        result = Sensitivity(**{**asdict(result), "key": key, "cached": False})
        _write(path, result)
        return result


def _read(path: Path) -> Sensitivity | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        data["rows"] = tuple(data["rows"])
        return Sensitivity(**data, cached=True)
    except (OSError, ValueError, TypeError, KeyError):
        return None  # damaged: measure again


def _write(path: Path, result: Sensitivity) -> None:
    data = asdict(result)
    data.pop("cached")
    data["rows"] = list(data["rows"])
    write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(data)))
