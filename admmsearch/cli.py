"""The ``admmsearch`` command: one short function per command. Options are declared once in
:mod:`admmsearch.options`; every command that prints data takes ``--format`` and prints through
one formatter; errors become one line and an exit status of their kind in
:class:`admmsearch.console.CommandGroup` (2 for bad input, 1 for a study that fails once
running). Each command imports what it runs, so ``--help`` loads nothing heavy.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import click

from . import console
from .options import (
    CACHE_DIR,
    STORAGE,
    TRUST_CODE,
    budget_options,
    compress_options,
    export_model_options,
    export_options,
    out_file,
    output_format,
    stores,
    study_command,
    ui_options,
)
from .record import BITS_PER_KIB

__all__ = ["main"]


@click.group(cls=console.CommandGroup)
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Per-layer joint pruning and quantization of neural networks by ADMM."""
    from .tracking import set_mlflow_defaults

    os.environ.setdefault("MPLBACKEND", "Agg")  # figures go to files; workers inherit it
    # MLflow logs at INFO (creating its tables, ...) on stderr, between our progress and our
    # one-line errors; its warnings stay. Read when mlflow is first imported, so set it here.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "INFO" if debug else "WARNING")
    set_mlflow_defaults()  # bounded HTTP retries, no progress bars; see admmsearch.tracking
    if debug:  # e.g. each failed heartbeat, with its traceback
        logging.basicConfig(format="%(asctime)s %(name)s: %(message)s")
        logging.getLogger("admmsearch").setLevel(logging.DEBUG)
    else:
        threading.excepthook = partial(console.thread_failed, ctx.meta)


# -- studies ------------------------------------------------------------------------------


def _validated(study_file: Path) -> tuple[Any, list[str]]:
    """The study file read and checked: the file first (no torch, Optuna or MLflow, so a bad
    file is refused at once), then its layers against the model."""
    from .config import load_study, validate_study

    load_study(study_file)
    return validate_study(study_file)


@main.command()
@study_command
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes on this machine.",
)
def run(study_file: Path, jobs: int, **options: Any) -> None:
    """Launch (or resume) the study in STUDY_FILE; print its Pareto front at the end."""
    _run_or_join(study_file, jobs, **options)


@main.command()
@study_command
def worker(study_file: Path, **options: Any) -> None:
    """Join the study in STUDY_FILE as one more worker (same storage), e.g. on another machine.

    --trials and --epochs are the totals over all workers, not this worker's share.
    """
    _run_or_join(study_file, 1, **options)


def _run_or_join(study_file: Path, jobs: int, **o: Any) -> None:
    """Prepare the study (checks, dense model, stores), run it here or in ``jobs`` worker
    processes with its progress on stderr, then its closing summary and front."""
    config, layers = _validated(study_file)  # a bad file is refused before torch loads
    from .search.schedule import check_fits, spent
    from .search.study import prepare, run_parallel, run_study, study_budget

    given = [k for k in ("trials", "epochs") if o[k] is not None]
    check_fits(config, layers, study_budget(config, o["trials"], o["epochs"]), given)

    devices = _devices(config, o["per_device"], jobs)
    budget = {"trials": o["trials"], "epochs": o["epochs"], "timeout": o["timeout"]}
    b = config.budget
    progress = console.StudyProgress(config.name, o["trials"] or b.trials, o["epochs"] or b.epochs)
    where = {"storage": o["storage"], "tracking_uri": o["tracking_uri"]}
    ctx = prepare(config, layers, **where, cache_dir=o["cache_dir"], events=progress.events())
    click.echo(console.layers_line(ctx.folding, ctx.uncompressed), err=True)
    before = _finished(ctx.study)
    progress.resume_at(spent(ctx.study.get_trials(deepcopy=False)))  # a resume counts on
    try:
        with console.running():
            if devices is not None or jobs > 1:
                run_parallel(study_file, ctx, jobs, **budget, devices=devices)
            else:
                run_study(ctx, **budget)
    except KeyboardInterrupt:
        _close(progress, ctx, study_file, "interrupted (Ctrl-C or SIGTERM): run again to resume")
        raise
    _close(progress, ctx, study_file, None, before)


def _finished(study: Any) -> int:
    return sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))


def _close(progress, ctx, study_file: Path, why: str | None, before: int | None = None) -> None:
    """The closing summary and the front; a rerun of a spent study says it ran nothing."""
    from .search.report import run_summary

    progress.close()
    facts = run_summary(ctx.study, ctx.config, time.monotonic() - progress.started, why)
    if before is not None and _finished(ctx.study) == before:
        click.echo(f"{ctx.config.name}: {facts['why']}, nothing to run", err=True)
    else:
        click.echo(console.summary_text(facts, ctx.config.name, str(study_file)), err=True)
    _print_front(ctx.study, ctx.config)


def _devices(config: Any, per_device: int | None, jobs: int) -> list[str] | None:
    """One device per worker process when several trials share devices, else None."""
    from .runtime import worker_devices

    count = per_device if per_device is not None else config.workers.per_device
    if count == 1 and config.device != "cuda":
        return None
    devices = worker_devices(config.device, count)
    if len(devices) == 1:
        return None
    if jobs > 1:
        raise click.UsageError("give --jobs or --per-device (workers.per_device), not both")
    return devices


def _print_front(study: Any, config: Any) -> None:
    from .search.feasibility import infeasible_note
    from .search.front import front_table

    table = front_table(study, list(config.objectives))
    if table.empty:
        click.echo(infeasible_note(study, config.constraints) or "no trial completed")
        return
    trials = "1 trial" if len(table) == 1 else f"{len(table)} trials"
    click.echo(f"Pareto front of {study.study_name} ({trials}):")
    console.echo(table, "table")


@main.command()
@click.argument("study_file", type=click.Path(dir_okay=False, path_type=Path))
@budget_options
@stores
@CACHE_DIR
@output_format("table", "json")
def check(
    study_file: Path,
    trials: int | None,
    epochs: int | None,
    timeout: float | None,
    storage,
    tracking_uri,
    cache_dir,
    fmt: str,
) -> None:
    """Check STUDY_FILE and everything checkable before training, as `run` does, and say what
    the study will do: its layers and search ranges, the data, the budget and its cost
    (--trials, --epochs and --timeout: as `run` given them would)."""
    config, layers = _validated(study_file)
    from .search.check import check_study
    from .search.study import study_budget

    where = {"storage": storage, "tracking_uri": tracking_uri, "cache_dir": cache_dir}
    budget = study_budget(config, trials, epochs, timeout)
    given = [k for k, v in (("trials", trials), ("epochs", epochs)) if v is not None]
    done = check_study(config, layers, **where, budget=budget, given=given)
    if fmt == "json":
        console.echo(done.to_dict(), fmt)
        return
    click.echo(f"{study_file}: OK, nothing created\n" + console.check_text(done), nl=False)


@main.command()
@click.argument("study_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for sensitivity.csv and .png [default: sensitivity-<study name>].",
)
@click.option("--html", is_flag=True, help="Also write the interactive sensitivity.html.")
@output_format()
@stores
@CACHE_DIR
def sensitivity(
    study_file: Path, out, html: bool, fmt: str, storage, tracking_uri, cache_dir
) -> None:
    """Per-layer sensitivity of the study's dense model: validation accuracy with each layer
    (or tied group) alone pruned to each keep ratio, or quantized to each bit width, of the
    study's range; nothing retrained. Cached, and logged to the study's MLflow parent run."""
    config, layers = _validated(study_file)
    from .search.seeding import study_sensitivity
    from .search.sensitivity.plot import write_sensitivity
    from .search.study import prepare

    where = {"storage": storage, "tracking_uri": tracking_uri, "cache_dir": cache_dir}
    events = console.StudyProgress(config.name).events()
    result = study_sensitivity(prepare(config, layers, **where, events=events))
    paths = write_sensitivity(result, out or Path(f"sensitivity-{config.name}"), html=html)
    if fmt != "table":
        console.echo(result.frame(), fmt)
        return
    click.echo(console.sensitivity_text(result, paths), nl=False)


@main.command("list")
@STORAGE
@output_format()
def list_(storage: str | None, fmt: str) -> None:
    """The studies in a storage: state, trial counts and the ends of each Pareto front."""
    from .locations import resolve_storage
    from .redact import redact_url
    from .search.report import study_rows

    url = resolve_storage(None, storage)
    rows = study_rows(url)
    if rows.empty:
        click.echo(f"no studies in {redact_url(url)}")
        return
    console.echo(rows, fmt)


@main.command()
@click.argument("study")
@stores
@click.option("--all", "every", is_flag=True, help="List every trial, not only the front.")
@output_format("table", "json")
def show(study: str, storage, tracking_uri, every: bool, fmt: str) -> None:
    """One study (a study file or a study name): settings, trial counts, front, failures."""
    from .search.catalog import open_existing
    from .search.report import study_report

    report = study_report(open_existing(study, storage=storage, tracking_uri=tracking_uri), every)
    if fmt == "json":
        console.echo(report, fmt)
        return
    click.echo(console.report_text(report), nl=False)


@main.command()
@click.argument("study")
@stores
@output_format()
@out_file("Write the front here instead of printing it (.csv, .json; a plot: .png or .html).")
def pareto(study: str, storage, tracking_uri, fmt: str, out: Path | None) -> None:
    """The Pareto front of STUDY (validation accuracy against the packed file's size)."""
    from .search.catalog import open_existing
    from .search.front import FRONT_SUFFIXES, front_records, write_front

    if out is not None and out.suffix not in FRONT_SUFFIXES:
        kinds = ", ".join(FRONT_SUFFIXES)
        raise click.BadParameter(f"{out}: writes only {kinds} files", param_hint="'--out'")
    opened = open_existing(study, storage=storage, tracking_uri=tracking_uri)
    objectives, limits = list(opened.config.objectives), opened.config.constraints
    if out is not None:
        written = write_front(opened.study, out, objectives, limits)
        trials = "" if out.suffix in (".png", ".html") else f" ({written.trials} trials)"
        click.echo(f"wrote {' and '.join(str(p) for p in written.paths)}{trials}")
        return
    records, note = front_records(opened.study, objectives, limits)
    if note:
        click.echo(f"warning: {note}; listed: every completed trial, the closest first", err=True)
    console.echo(records if fmt == "json" else console.flat(records), fmt)


@main.command()
@export_options
def export(study: str, storage, tracking_uri, number, policy, max_drop, max_storage_kib, out):
    """Export a trial's per-layer settings and metrics: --trial N, --policy, or by default the
    smallest feasible trial within the study's own max_accuracy_drop."""
    from .search.catalog import open_existing
    from .search.export import choose_trial, settings_document
    from .settings_file import write_settings

    if number is not None and policy is not None:
        raise click.UsageError("give --trial N or --policy, not both")
    opened = open_existing(study, storage=storage, tracking_uri=tracking_uri)
    bits = None if max_storage_kib is None else max_storage_kib * BITS_PER_KIB
    trial, why = choose_trial(
        opened, number=number, policy=policy, max_drop=max_drop, max_storage_bits=bits
    )
    text = write_settings(settings_document(opened, trial, why), out)
    click.echo(text if out is None else console.exported_line(out, trial, why), nl=out is not None)


# -- one model ----------------------------------------------------------------------------


@main.command()
@compress_options
def compress(settings: Path | None, out: Path, fmt: str, device, cache_dir, **given) -> None:
    """Compress once, without search, and write the packed model.

    With SETTINGS (a file from `admmsearch export`), apply that trial's settings and compare
    the result with the figures it recorded. Without it, train the model and compress it to
    --plan or to a uniform --keep/--bits.
    """
    from .compression import compress as compress_once

    done = compress_once(
        _source(settings, cache_dir, given), out, device=device, on_epoch=console.echo_epoch
    )
    if fmt == "json":
        console.echo(console.reproduction(done, settings) if settings else done.to_dict(), fmt)
        return
    click.echo(console.compressed_text(done, str(out)), nl=False)
    if settings is not None:
        click.echo(console.reproduction_text(done), nl=False)


def _source(settings: Path | None, cache_dir: Path | None, given: dict[str, Any]) -> Any:
    """What to compress: the settings file, or the model, dataset and plan given."""
    from .compression import FromModel, FromSettings, read_plan

    named = {k: v for k, v in given.items() if v is not None}
    if settings is not None:
        if named:
            flags = ", ".join(f"--{k.split('_')[0]}" for k in named)
            raise click.UsageError(f"{flags} cannot be combined with SETTINGS (edit the file)")
        return FromSettings(settings, cache_dir)
    plan_path = named.pop("plan_path", None)
    uniform = {"keep": named.pop("keep", 0.1), "bits": named.pop("bits", 4)}
    model = {"model": named.pop("model_name", "digits-cnn"), **named}
    plan = None if plan_path is None else read_plan(plan_path)
    return FromModel(plan=plan, plan_file=plan_path, **uniform, **model)


@main.command()
@click.argument("model_file", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("data", type=click.Path(dir_okay=False, path_type=Path))
@TRUST_CODE
@output_format("table", "json")
def predict(model_file: Path, data: Path, trust_code: bool, fmt: str) -> None:
    """Rebuild MODEL_FILE (.admm) from the file alone and print its accuracy on DATA.

    DATA is a .npz with x_test and y_test (a dataset file) or x and y, as raw arrays: the
    normalisation the model was trained with comes from the packed file.
    """
    from .deploy import load_model, read_arrays

    deployed = load_model(model_file, trust_code=trust_code)
    x, y, keys = read_arrays(data, deployed.meta.num_classes or None)
    accuracy = deployed.accuracy(x, y)
    if fmt == "json":
        summary = {"model": str(model_file), "data": str(data), "arrays": list(keys)}
        console.echo({**summary, "samples": len(y), "accuracy": accuracy}, fmt)
        return
    correct = round(accuracy * len(y))
    click.echo(
        f"{model_file} on {data} ({keys[0]}, {keys[1]}): accuracy {accuracy:.4f} "
        f"({correct} of {len(y)})"
    )


@main.command("export-model")
@export_model_options
def export_model(model_file: Path, target: str | None, old_target: str | None, **o: Any) -> None:
    """Export a packed model (.admm) for deployment: ONNX, or C for microcontrollers."""
    from .deploy import export_c, export_onnx

    target = target or old_target
    if target is None:
        raise click.UsageError("give --target onnx or --target c")
    if target == "onnx":
        if o["decode_layers"] or o["samples"]:
            raise click.UsageError("--decode-layers and --samples apply to --target c only")
        out = o["out"] or model_file.with_suffix(".onnx")
        click.echo(
            export_onnx(model_file, out, int8=o["int8"], trust_code=o["trust_code"]).summary()
        )
        return
    if o["int8"]:
        raise click.UsageError("--int8 applies to --target onnx only")
    options = {"decoded": o["decode_layers"], "trust_code": o["trust_code"]}
    out = o["out"] or model_file.with_suffix("")
    info = export_c(model_file, out, **options, samples=o["samples"], target=o["measure"])
    click.echo(info.summary())


@main.command()
@ui_options
def ui(study: str | None, storage, tracking_uri, no_dashboard: bool, **where: Any) -> None:
    """Start the MLflow UI (and the Optuna dashboard) on the stores of STUDY; Ctrl-C stops them.

    STUDY is a study file or a study name; without it the default stores are used.
    """
    from .locations import resolve_storage, resolve_tracking
    from .preflight import check_store_folder
    from .ui import serve_ui

    config = None
    if study is not None and (study.endswith((".yaml", ".yml")) or Path(study).is_file()):
        config, _ = _validated(Path(study))
    storage, tracking_uri = (
        resolve_storage(config, storage),
        resolve_tracking(config, tracking_uri),
    )
    check_store_folder(tracking_uri, "tracking URI")
    serve_ui(tracking_uri, None if no_dashboard else storage, **where, echo=click.echo)


if __name__ == "__main__":  # python -m admmsearch.cli
    sys.exit(main())
