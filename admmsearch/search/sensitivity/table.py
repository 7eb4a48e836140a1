"""The sensitivity table: one row per unit and grid point, and what it was measured against."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

__all__ = ["COLUMNS", "Sensitivity"]

#: Columns of the table, one row per unit and grid point.
COLUMNS = (
    "unit",
    "layers",
    "keep",
    "quantizer",
    "levels",
    "val_accuracy",
    "accuracy_drop",
    "storage_bits",
    "measured",
    "in_space",
)


@dataclass(frozen=True)
class Sensitivity:
    """The measured table and what it was measured against.

    Attributes:
        rows: one dict per unit and grid point, keys :data:`COLUMNS`; ``levels`` None means
            float32 (no quantization); ``val_accuracy`` is None on predicted (not
            ``measured``) points, whose ``accuracy_drop`` is the sum of the curves' drops;
            ``storage_bits`` is the unit's weights (with indices) plus its biases, in bits;
            ``in_space`` says whether the search space holds the point (the reference, keep
            1.0 / no quantization, and the curves through it may lie outside).
        dense_val_accuracy: validation accuracy of the untouched model, in [0, 1].
        fixed_bits: bits of everything the units do not hold (other tensors, raw); a model's
            storage with indices is ``fixed_bits`` plus its units' ``storage_bits``.
        dense_storage_bits: the whole dense model's storage with indices, in bits.
        seconds: wall time of the measurement.
    """

    rows: tuple[Mapping[str, Any], ...]
    dense_val_accuracy: float
    fixed_bits: int
    dense_storage_bits: int
    seconds: float
    key: str = ""
    cached: bool = field(default=False, compare=False)

    def frame(self) -> pd.DataFrame:
        """The table as a DataFrame with :data:`COLUMNS`."""
        return pd.DataFrame(list(self.rows), columns=list(COLUMNS))

    def summary(self, drop: float = 0.01) -> pd.DataFrame:
        """Per unit: the smallest keep ratio (float32) and the fewest bits or clusters (every
        weight kept) that lose at most ``drop`` of validation accuracy; None when none does."""
        frame = self.frame()
        frame = frame[frame["measured"]]
        rows = []
        for unit, part in frame.groupby("unit", sort=False):
            ok = part[part["accuracy_drop"] <= drop + 1e-12]
            pruned = ok[ok["levels"].isna()]
            quantized = ok[(ok["keep"] == 1.0) & ok["levels"].notna()]
            rows.append(
                {
                    "unit": unit,
                    "layers": part["layers"].iloc[0],
                    "keep_within": pruned["keep"].min() if len(pruned) else None,
                    "levels_within": int(quantized["levels"].min()) if len(quantized) else None,
                    "quantizer": part["quantizer"].iloc[0],
                    "worst_drop": part["accuracy_drop"].max(),
                }
            )
        return pd.DataFrame(rows)
