"""The command line's options, each declared once and used by every command that takes it
(:mod:`admmsearch.cli`): the stores, the cache, the budget, the output format and file, and the
option sets of ``run``/``worker``, ``compress``, ``export``, ``export-model`` and ``ui``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .console import FORMATS, URLS

__all__ = [
    "CACHE_DIR",
    "STORAGE",
    "TRACKING",
    "TRUST_CODE",
    "budget_options",
    "compress_options",
    "export_model_options",
    "export_options",
    "out_file",
    "output_format",
    "stores",
    "study_command",
    "ui_options",
]


def _remember_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Keep a store URL where the error line finds it, to mask its password."""
    if value:
        ctx.meta.setdefault(URLS, []).append(value)
    return value


def _apply(fn: Callable, *options: Callable) -> Callable:
    """``fn`` with ``options`` applied, the first listed shown first in ``--help``."""
    for option in reversed(options):
        fn = option(fn)
    return fn


STORAGE = click.option(
    "--storage",
    callback=_remember_url,
    help="Optuna storage URL (default: the study file's, $ADMMSEARCH_STORAGE, else "
    "sqlite:///admmsearch.db).",
)
TRACKING = click.option(
    "--tracking-uri",
    callback=_remember_url,
    help="MLflow tracking URI (default: the study file's, $MLFLOW_TRACKING_URI, else mlruns/).",
)
CACHE_DIR = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Dense-model and stage caches, shareable by workers (default: the study file's "
    "workers.cache_dir, $ADMMSEARCH_CACHE_DIR, else .admmsearch/cache).",
)
TRUST_CODE = click.option(
    "--trust-code",
    is_flag=True,
    help="Allow a file whose network is user code (module:function) to import and run it.",
)


def stores(fn: Callable) -> Callable:
    """``--storage`` and ``--tracking-uri``."""
    return _apply(fn, STORAGE, TRACKING)


def output_format(*choices: str) -> Callable:
    """``--format``: how a command prints its data (table, csv or json; ``choices`` only)."""
    kinds = choices or FORMATS
    return click.option(
        "--format", "fmt", type=click.Choice(kinds), default="table", show_default=True
    )


def out_file(help_text: str, default: str | None = None) -> Callable:
    """``--out FILE``, in a folder that exists (refused before any work, not after)."""
    return click.option(
        "--out",
        type=click.Path(dir_okay=False, path_type=Path),
        default=default,
        show_default=default is not None,
        callback=_existing_folder,
        help=help_text,
    )


def _existing_folder(ctx: click.Context, param: click.Parameter, out: Path | None) -> Any:
    if out is not None and not out.expanduser().absolute().parent.is_dir():
        raise click.BadParameter(f"{out}: folder {out.parent} does not exist; create it first")
    return out


def budget_options(fn: Callable) -> Callable:
    """``--trials``, ``--epochs`` and ``--timeout``: a run's budget over the study file's."""
    return _apply(
        fn,
        click.option(
            "--trials",
            type=click.IntRange(min=1),
            help="Trials in all, over every worker (budget.trials).",
        ),
        click.option(
            "--epochs",
            type=click.IntRange(min=1),
            help="Training epochs in all, over every worker (budget.epochs).",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0, min_open=True),
            help="Seconds after which no new trial starts (budget.timeout_s).",
        ),
    )


def study_command(fn: Callable) -> Callable:
    """The study file and the options of ``run`` and ``worker``: budget, devices, stores."""
    fn = _apply(
        fn,
        click.option(
            "--per-device",
            type=click.IntRange(min=1),
            help="Trials at once on each device, one worker process each (default: "
            "the study file's workers.per_device, else 1).",
        ),
        STORAGE,
        TRACKING,
        CACHE_DIR,
    )
    fn = budget_options(fn)  # outermost: shown first in --help
    return click.argument("study_file", type=click.Path(dir_okay=False, path_type=Path))(fn)


def compress_options(fn: Callable) -> Callable:
    """``compress``: a settings file, or a model, dataset and plan (or uniform keep/bits)."""
    return _apply(
        fn,
        click.argument(
            "settings", required=False, type=click.Path(dir_okay=False, path_type=Path)
        ),
        click.option(
            "--model",
            "model_name",
            help="Without SETTINGS: model name, "
            "torchvision:<name> or module:function [default: digits-cnn].",
        ),
        click.option(
            "--dataset",
            help="Without SETTINGS: dataset name, a .npz file or "
            "module:function [default: digits].",
        ),
        click.option(
            "--plan",
            "plan_path",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Without SETTINGS: per-layer plan (YAML: layers: {name: {keep, "
            "bits|clusters, structured}}).",
        ),
        click.option(
            "--keep",
            type=click.FloatRange(0, 1, min_open=True),
            help="Without SETTINGS or --plan: keep ratio of every layer [default: 0.1].",
        ),
        click.option(
            "--bits",
            type=click.IntRange(1, 16),
            help="Without SETTINGS or --plan: bits of every layer [default: 4].",
        ),
        click.option("--seed", type=int, help="Without SETTINGS: seed [default: 0]."),
        click.option("--device", help="cpu or cuda [default: SETTINGS' device, or cpu]."),
        out_file("Where to write the packed compressed model.", "model.admm"),
        output_format("table", "json"),
        CACHE_DIR,
    )


def export_options(fn: Callable) -> Callable:
    """``export``: which trial (a number, a policy or by default), and where to write it."""
    return _apply(
        fn,
        click.argument("study"),
        STORAGE,
        TRACKING,
        click.option("--trial", "number", type=click.IntRange(min=0), help="Export this trial."),
        click.option(
            "--policy",
            type=click.Choice(("max-compression", "max-accuracy")),
            help="max-compression: the smallest storage within --max-drop; "
            "max-accuracy: the best validation accuracy within --max-storage-kib.",
        ),
        click.option(
            "--max-drop",
            type=click.FloatRange(0, 1),
            help="Largest validation accuracy drop, e.g. 0.01 [default: the study's].",
        ),
        click.option(
            "--max-storage-kib",
            type=click.FloatRange(0, min_open=True),
            help="Largest packed model file, in KiB [default: the study's].",
        ),
        out_file("Settings file to write (.yaml or .json); printed when not given."),
    )


def _deprecated_format(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is not None:
        click.echo("warning: export-model --format is deprecated; use --target", err=True)
    return value


_TARGET_OPTIONS = (
    click.option(
        "--target",
        type=click.Choice(["onnx", "c"]),
        help="onnx: one .onnx file; c: a C99 header and source with admm_predict.",
    ),
    click.option(
        "--format",
        "old_target",
        type=click.Choice(["onnx", "c"]),
        hidden=True,
        callback=_deprecated_format,
        help="Deprecated spelling of --target.",
    ),
    click.option(
        "--out",
        type=click.Path(path_type=Path),
        help="The .onnx file, or the folder for the C files [default: beside MODEL_FILE].",
    ),
    click.option(
        "--int8",
        is_flag=True,
        help="ONNX: uniformly quantized layers whose "
        "levels fit int8 as int8 weights and one scale (QDQ).",
    ),
)

_C_OPTIONS = (
    click.option(
        "--decode-layers",
        is_flag=True,
        help="C: decode each layer whole into "
        "a buffer first (faster, more RAM) instead of reading its stream.",
    ),
    click.option(
        "--samples",
        type=click.Path(dir_okay=False, path_type=Path),
        help="C: write this .npz's raw test arrays as samples.bin for main.c.",
    ),
    click.option(
        "--measure",
        type=click.Choice(["auto", "cortex-m4", "host", "none"]),
        default="auto",
        show_default=True,
        help="C: compile the export to "
        "measure code, data, RAM and stack (auto: a Cortex-M4 if arm-none-eabi-gcc "
        "is installed, else this computer if gcc is).",
    ),
)


def export_model_options(fn: Callable) -> Callable:
    """``export-model``: the target (``--format``, its old spelling, still read) and its
    options."""
    return _apply(
        fn,
        click.argument("model_file", type=click.Path(dir_okay=False, path_type=Path)),
        *_TARGET_OPTIONS,
        TRUST_CODE,
        *_C_OPTIONS,
    )


def ui_options(fn: Callable) -> Callable:
    """``ui``: which stores, and where the servers listen."""
    return _apply(
        fn,
        click.argument("study", required=False),
        STORAGE,
        TRACKING,
        click.option(
            "--host",
            default="127.0.0.1",
            show_default=True,
            help="Interface to bind; 127.0.0.1 keeps the UIs on this machine.",
        ),
        click.option(
            "--port",
            type=click.IntRange(1, 65535),
            default=5000,
            show_default=True,
            help="Port of the MLflow UI.",
        ),
        click.option(
            "--dashboard-port",
            type=click.IntRange(1, 65535),
            default=8080,
            show_default=True,
            help="Port of the Optuna dashboard (where installed).",
        ),
        click.option("--no-dashboard", is_flag=True, help="Start only the MLflow UI."),
    )
