"""Files the caches share between trials and workers: written whole, read without unpickling.

The cache folder may be shared between machines (``workers.cache_dir``), so nothing read from
it runs code: tensor files are read with ``torch.load(weights_only=True)`` and everything else
is JSON. Every cache file is written to a temporary name beside its place and renamed over it,
so a reader never sees half a file, even where the file system ignores locks.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import AdmmSearchWarning

__all__ = ["PICKLED", "CacheWarning", "load_tensors", "save_tensors", "write_atomic"]

#: Why a tensor file was refused when it holds pickled objects.
PICKLED = "it holds pickled Python objects, which admmsearch does not unpickle"


class CacheWarning(AdmmSearchWarning):
    """A cache file could not be used; it is ignored (a cache miss) and written again."""


def write_atomic(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(temporary path)`` beside ``path``, then rename the file over ``path``; the
    temporary file is removed if ``write`` fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_tensors(obj: object, path: Path) -> None:
    """``torch.save`` tensors and plain containers of them to ``path``, atomically."""
    import torch

    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def load_tensors(path: Path) -> tuple[Any, str]:
    """``torch.load(weights_only=True)``: ``(object, "")`` or ``(None, why it failed)``."""
    import torch

    try:
        if path.stat().st_size == 0:
            return None, "the file is empty"
        return torch.load(path, map_location="cpu", weights_only=True), ""
    except FileNotFoundError:
        return None, "no such file"
    except OSError as exc:
        return None, f"cannot read it ({exc.strerror or exc})"
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file
        if "Unsupported global" in str(exc):
            return None, PICKLED
        first = (str(exc).strip().splitlines() or [""])[0]
        detail = "" if not first or first.startswith("Weights only load failed") else first
        return None, "not a file written by torch.save" + (f" ({detail[:100]})" if detail else "")
