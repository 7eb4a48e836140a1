"""admmsearch: per-layer joint pruning and quantization of neural networks by ADMM, searched
with Optuna and tracked in MLflow.

The front door names the few things a user starts from; ``__init__.pyi`` lists them once, and
each loads its module on first use (``lazy_loader.attach_stub``), so ``import admmsearch``
costs nothing until a name is used (torch, Optuna and MLflow load then)::

    >>> import admmsearch
    >>> plan = admmsearch.Plan.uniform(["fc1", "fc2"], keep=0.1, bits=4)
    >>> plan.layers["fc1"].keep, plan.layers["fc1"].bits
    (0.1, 4)

- compress a model once: :func:`compress` (from a :class:`FromModel` description or an exported
  :class:`FromSettings` file) -> :class:`Compressed`; or the pipeline itself,
  :func:`run_pipeline` with a :class:`Plan` and :class:`PipelineSettings`
- data and models: :func:`load_dataset`, :func:`create_model`, :func:`compressible_layers`
- the packed file: :func:`pack_model`, :class:`ModelMeta`, :func:`model_storage`,
  :func:`load_model`
- studies: :func:`load_study`, :func:`validate_study`, :func:`prepare`, :func:`run_study`,
  :func:`open_existing`, :func:`front_table`, :func:`write_front`
- errors: :class:`AdmmSearchError`

Everything else is public in its own module or wing: :mod:`admmsearch.constraints`,
:mod:`admmsearch.packed`, :mod:`admmsearch.deploy`, :mod:`admmsearch.search`,
:mod:`admmsearch.runtime`, :mod:`admmsearch.ui`, :mod:`admmsearch.errors`, ...
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import lazy_loader

try:
    __version__ = version("admmsearch")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__getattr__, __dir__, _names = lazy_loader.attach_stub(__name__, __file__)
__all__ = ["__version__", *sorted(n for n in _names if n != "__version__")]
