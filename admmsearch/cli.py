"""The ``admmsearch`` command. Thin: each command parses, calls the library, prints the result."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .errors import AdmmSearchError, AdmmSearchWarning, NoTrialError
from .names import POLICIES
from .record import BITS_PER_BYTE, BITS_PER_KIB, Metric, TrialAttr, kib
from .redact import redact_text, redact_url
from .tracking import set_mlflow_defaults

if TYPE_CHECKING:  # each command imports what it runs, so that --help stays quick
    from .compression import Compressed

__all__ = ["main"]


class _Group(click.Group):
    """Every error is one line on stderr, ``error: ...``, with a meaningful exit code:
    2 for a bad command line, study file, settings, data or a lookup that fails (every error
    before work starts); 1 for a failure while running (``AdmmSearchError.exit_code``); 130 for
    Ctrl-C and 143 for SIGTERM, which stops the command as Ctrl-C does (a running trial is
    ended as interrupted, its run KILLED). ``--debug`` shows the traceback instead."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            with warnings.catch_warnings(), _sigterm_interrupts():
                warnings.showwarning = _show_warning
                code = super().main(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:  # bare `admmsearch`: its help
            click.echo(exc.ctx.get_help())
            sys.exit(0)
        except click.ClickException as exc:
            hint = f" (see: {exc.ctx.command_path} --help)" if getattr(exc, "ctx", None) else ""
            click.echo(f"error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            if _TERMINATED:
                click.echo("error: stopped by SIGTERM", err=True)
                sys.exit(128 + signal.SIGTERM)
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AdmmSearchError as exc:
            if ctx.params.get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except (
            click.ClickException,
            click.exceptions.Exit,  # --help and ctx.exit(): click's own control flow
            click.Abort,
            SystemExit,
            KeyboardInterrupt,
        ):
            raise
        except Exception as exc:  # noqa: BLE001 - a bug or an outside failure: still one line
            if ctx.params.get("debug"):
                raise
            urls = [
                *_GIVEN_URLS,
                os.environ.get("ADMMSEARCH_STORAGE"),
                os.environ.get("MLFLOW_TRACKING_URI"),
            ]
            message = redact_text(f"{type(exc).__name__}: {exc}", *urls)
            click.echo(f"error: {message} (run with --debug for the traceback)", err=True)
            sys.exit(1)


_TERMINATED: list[int] = []  # the signal that stopped the command, if one did


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While a command runs, SIGTERM (``kill``, a container or job scheduler stopping it)
    raises KeyboardInterrupt as Ctrl-C does, so the command ends what it runs cleanly."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        _TERMINATED.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """admmsearch's own warnings as one ``warning: ...`` line; others as Python shows them."""
    if issubclass(category, AdmmSearchWarning):
        click.echo(f"warning: {message}", err=True)
    else:
        _PYTHON_SHOWWARNING(message, category, filename, lineno, file, line)


_PYTHON_SHOWWARNING = warnings.showwarning
_GIVEN_URLS: list[str] = []  # --storage / --tracking-uri values, masked in unexpected errors


def _remember_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value:
        _GIVEN_URLS.append(value)
    return value


@click.group(cls=_Group)
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
def main(debug: bool) -> None:
    """Per-layer joint pruning and quantization of neural networks by ADMM."""
    os.environ.setdefault("MPLBACKEND", "Agg")  # figures go to files; workers inherit it
    # MLflow logs at INFO (creating its tables, ...) on stderr, between our progress and our
    # one-line errors; its warnings stay. Read when mlflow is first imported, so set it here.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "INFO" if debug else "WARNING")
    set_mlflow_defaults()  # bounded HTTP retries, no progress bars; see admmsearch.tracking
    if debug:  # e.g. each failed heartbeat, with its traceback
        logging.basicConfig(format="%(asctime)s %(name)s: %(message)s")
        logging.getLogger("admmsearch").setLevel(logging.DEBUG)
    else:
        threading.excepthook = _thread_failed


def _thread_failed(args: threading.ExceptHookArgs) -> None:
    """A background thread that dies says so in one line; ``--debug`` shows the traceback."""
    if args.exc_type is SystemExit:
        return
    urls = [
        *_GIVEN_URLS,
        os.environ.get("ADMMSEARCH_STORAGE"),
        os.environ.get("MLFLOW_TRACKING_URI"),
    ]
    name = args.thread.name if args.thread is not None else "?"
    text = redact_text(f"{args.exc_type.__name__}: {args.exc_value}", *urls).splitlines()
    click.echo(
        f"warning: thread {name} stopped: {text[0] if text else ''} (--debug shows the traceback)",
        err=True,
    )


@main.command()
@click.argument("settings", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--model",
    "model_name",
    default=None,
    help="Without SETTINGS: model name, torchvision:<name> or module:function "
    "[default: digits-cnn].",
)
@click.option(
    "--dataset",
    default=None,
    help="Without SETTINGS: dataset name, a .npz file or module:function [default: digits].",
)
@click.option(
    "--plan",
    "plan_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Without SETTINGS: per-layer plan (YAML: layers: {name: {keep, bits|clusters, "
    "structured}}).",
)
@click.option(
    "--keep",
    type=click.FloatRange(0, 1, min_open=True),
    default=None,
    help="Without SETTINGS or --plan: keep ratio of every layer [default: 0.1].",
)
@click.option(
    "--bits",
    type=click.IntRange(1, 16),
    default=None,
    help="Without SETTINGS or --plan: bits of every layer [default: 4].",
)
@click.option("--seed", type=int, default=None, help="Without SETTINGS: seed [default: 0].")
@click.option("--device", default=None, help="cpu or cuda [default: SETTINGS' device, or cpu].")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default="model.admm",
    show_default=True,
    help="Where to write the packed compressed model.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="With SETTINGS: where the study's dense model is cached (default: "
    "$ADMMSEARCH_CACHE_DIR, else .admmsearch/cache, as for the study).",
)
def compress(
    settings: Path | None,
    model_name: str | None,
    dataset: str | None,
    plan_path: Path | None,
    keep: float | None,
    bits: int | None,
    seed: int | None,
    device: str | None,
    out: Path,
    fmt: str,
    cache_dir: Path | None,
) -> None:
    """Compress once, without search, and write the packed model.

    With SETTINGS (a file from `admmsearch export`), apply that trial's settings and compare
    the result with the figures it recorded. Without it, train the model and compress it to
    --plan or to a uniform --keep/--bits.
    """
    from .compression import FromModel, FromSettings, read_plan
    from .compression import compress as compress_once

    _check_out_folder(out)
    if settings is not None:
        given = [
            f"--{n}"
            for n, v in (
                ("model", model_name),
                ("dataset", dataset),
                ("plan", plan_path),
                ("keep", keep),
                ("bits", bits),
                ("seed", seed),
            )
            if v is not None
        ]
        if given:
            raise click.UsageError(
                f"{', '.join(given)} cannot be combined with SETTINGS "
                "(edit the settings file instead)"
            )
        source: FromSettings | FromModel = FromSettings(settings, cache_dir)
    else:
        given_model = {
            k: v
            for k, v in (("model", model_name), ("dataset", dataset), ("seed", seed))
            if v is not None
        }
        plan = None if plan_path is None else read_plan(plan_path)
        uniform = {"keep": 0.1 if keep is None else keep, "bits": 4 if bits is None else bits}
        source = FromModel(plan=plan, plan_file=plan_path, **uniform, **given_model)
    done = compress_once(source, out, device=device, on_epoch=_echo_epoch)
    if settings is not None:
        _print_reproduction(done, settings, out, fmt)
    else:
        _print_result(done, out, fmt)


def _accuracy(value: float | None) -> str:
    """An accuracy to four places, or a dash where it was not measured."""
    return "–" if value is None else f"{value:.4f}"


def _uncompressed_line(uncompressed: dict[str, str]) -> str:
    """One line naming the modules with a weight that stay uncompressed (stored raw)."""
    names = ", ".join(f"{name or '(model)'} ({kind})" for name, kind in uncompressed.items())
    return f"uncompressed layers (stored raw): {names or 'none'}"


def _check_out_folder(out: Path | None) -> None:
    """An output file goes into a folder that exists: refused before any work, not after."""
    if out is not None and not out.expanduser().absolute().parent.is_dir():
        raise click.BadParameter(
            f"{out}: folder {out.parent} does not exist; create it first", param_hint="'--out'"
        )


def _echo_epoch(stage: str, epoch: int, loss: float) -> None:
    click.echo(f"  {stage:<16} epoch {epoch + 1:>3}  loss {loss:.4f}", err=True)


def _print_reproduction(done: Compressed, settings: Path, out: Path, fmt: str) -> None:
    """The result of a settings file, held against the figures its trial recorded."""
    doc = done.document or {}
    exported = doc.get("metrics", {})
    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    "settings": str(settings),
                    "study": doc.get("study"),
                    "trial": doc.get("trial"),
                    "metrics": done.metrics,
                    "exported": exported,
                    "uncompressed_layers": dict(done.result.uncompressed),
                    "file": str(out),
                    "file_bytes": done.info.file_bytes,
                    "header_bytes": done.info.header_bytes,
                },
                indent=2,
            )
        )
        return
    _print_result(done, out, fmt)
    click.echo("")
    click.echo(f"against trial {doc.get('trial')} of study {doc.get('study')} (exported figures):")
    for key in (
        Metric.VAL_ACCURACY,
        Metric.TEST_ACCURACY,
        Metric.ACCURACY_DROP,
        Metric.STORAGE_BITS,
        Metric.PAYLOAD_BITS,
        Metric.COMPRESSION_RATIO,
    ):
        if key in exported and key in done.metrics:
            click.echo(f"  {key:<30} {done.metrics[key]:>14.4f}  exported {exported[key]:>14.4f}")


def _study_options(fn):
    """Options every command that touches a study takes."""
    fn = click.option(
        "--storage",
        envvar=None,
        default=None,
        callback=_remember_url,
        help="Optuna storage URL (default: study file, $ADMMSEARCH_STORAGE, "
        "else sqlite:///admmsearch.db).",
    )(fn)
    fn = click.option(
        "--tracking-uri",
        default=None,
        callback=_remember_url,
        help="MLflow tracking URI (default: study file, $MLFLOW_TRACKING_URI, "
        "else the local mlruns/).",
    )(fn)
    return fn


def _cache_option(fn):
    return click.option(
        "--cache-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Dense-model and stage caches, shareable by workers (default: the study file's "
        "workers.cache_dir, $ADMMSEARCH_CACHE_DIR, else .admmsearch/cache).",
    )(fn)


def _per_device_option(fn):
    return click.option(
        "--per-device",
        type=click.IntRange(min=1),
        default=None,
        help="Trials at once on each device, one worker process each (default: the study "
        "file's workers.per_device, else 1).",
    )(fn)


def _devices(config, per_device: int | None, jobs: int) -> list[str] | None:
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


def _epoch_bar(enabled: bool):
    """A second progress bar for the epochs inside the current trial."""
    from tqdm.auto import tqdm

    bar = tqdm(desc="epochs", unit="epoch", position=1, leave=False, disable=not enabled)

    def on_epoch(stage: str, epoch: int, loss: float) -> None:
        bar.set_postfix_str(f"{stage} loss {loss:.3f}")
        bar.update(1)

    return bar, on_epoch


@main.command()
@click.argument("study_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--trials", type=click.IntRange(min=1), help="Trials in all (overrides budget).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds before no new trial starts.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes on this machine.",
)
@_per_device_option
@_study_options
@_cache_option
def run(
    study_file: Path,
    trials: int | None,
    timeout: float | None,
    jobs: int,
    per_device: int | None,
    storage: str | None,
    tracking_uri: str | None,
    cache_dir: Path | None,
) -> None:
    """Launch (or resume) the study in STUDY_FILE; print its Pareto front at the end."""
    from .config import validate_study
    from .search.study import prepare, run_parallel, run_study

    config, layers = validate_study(study_file)
    devices = _devices(config, per_device, jobs)
    ctx = prepare(config, layers, storage=storage, tracking_uri=tracking_uri, cache_dir=cache_dir)
    click.echo(_uncompressed_line(ctx.uncompressed), err=True)
    if devices is not None or jobs > 1:
        study = run_parallel(
            study_file, ctx, jobs, trials=trials, timeout=timeout, devices=devices
        )
    else:
        bar, on_epoch = _epoch_bar(sys.stderr.isatty())
        try:
            study = run_study(
                ctx, trials=trials, timeout=timeout, progress=True, on_epoch=on_epoch
            )
        finally:
            bar.close()
    _print_front(study, config)


@main.command()
@click.argument("study_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--trials", type=click.IntRange(min=1), help="Trials in all (overrides budget).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True))
@_per_device_option
@_study_options
@_cache_option
def worker(
    study_file: Path,
    trials: int | None,
    timeout: float | None,
    per_device: int | None,
    storage: str | None,
    tracking_uri: str | None,
    cache_dir: Path | None,
) -> None:
    """Join the study in STUDY_FILE as one more worker (same storage), e.g. on another machine.

    --trials is the total over all workers, not this worker's share.
    """
    from .config import validate_study
    from .search.study import prepare, run_parallel, run_study

    config, layers = validate_study(study_file)
    devices = _devices(config, per_device, 1)
    ctx = prepare(config, layers, storage=storage, tracking_uri=tracking_uri, cache_dir=cache_dir)
    click.echo(_uncompressed_line(ctx.uncompressed), err=True)
    if devices is not None:
        run_parallel(study_file, ctx, 1, trials=trials, timeout=timeout, devices=devices)
    else:
        run_study(ctx, trials=trials, timeout=timeout, progress=False)


@main.command()
@click.argument("study_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for sensitivity.csv, .png and .html [default: sensitivity-<study name>].",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="table: a summary per layer; csv, json: every row.",
)
@_study_options
@_cache_option
def sensitivity(
    study_file: Path,
    out: Path | None,
    fmt: str,
    storage: str | None,
    tracking_uri: str | None,
    cache_dir: Path | None,
) -> None:
    """Per-layer sensitivity of the study's dense model: validation accuracy with each layer
    (or tied group) alone pruned to each keep ratio, or quantized to each bit width, of the
    study's range; nothing retrained. Cached, and logged to the study's MLflow parent run."""
    from .config import validate_study
    from .search.seeding import study_sensitivity
    from .search.sensitivity.plot import write_sensitivity
    from .search.study import prepare

    config, layers = validate_study(study_file)
    ctx = prepare(config, layers, storage=storage, tracking_uri=tracking_uri, cache_dir=cache_dir)
    result = study_sensitivity(ctx)
    paths = write_sensitivity(result, out or Path(f"sensitivity-{config.name}"))
    if fmt != "table":
        _echo_frame(result.frame(), fmt)
        return
    how = "from the cache" if result.cached else f"measured in {result.seconds:.1f} s"
    click.echo(
        f"dense validation accuracy {result.dense_val_accuracy:.4f}; {len(result.rows)} "
        f"points, {how}. Within 1 point of dense, each layer alone:"
    )
    click.echo(result.summary(0.01).to_string(index=False))
    click.echo(f"wrote {', '.join(str(p) for p in paths)}")


@main.command("list")
@click.option(
    "--storage",
    default=None,
    callback=_remember_url,
    help="Optuna storage URL (default: $ADMMSEARCH_STORAGE, else sqlite:///admmsearch.db).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
def list_(storage: str | None, fmt: str) -> None:
    """The studies in a storage: state, trial counts and the ends of each Pareto front."""
    from .locations import resolve_storage
    from .search.catalog import study_rows

    url = resolve_storage(None, storage)
    rows = study_rows(url)
    if rows.empty:
        click.echo(f"no studies in {redact_url(url)}")
        return
    _echo_frame(rows, fmt)


@main.command()
@click.argument("study")
@_study_options
def show(study: str, storage: str | None, tracking_uri: str | None) -> None:
    """One study (a study file or a study name): settings, trial counts, front, failures."""
    from .search.catalog import describe, failed_trials, open_existing
    from .search.front import front_table

    opened = open_existing(study, storage=storage, tracking_uri=tracking_uri)
    facts = describe(opened)
    width = max(len(k) for k, _ in facts)
    for key, value in facts:
        click.echo(f"{key:<{width}}  {value}")
    table = front_table(opened.study, list(opened.config.objectives))
    click.echo("")
    click.echo("Pareto front:" if not table.empty else f"Pareto front: {_no_front(opened)}")
    if not table.empty:
        click.echo(table.to_string(index=False))
    failures = failed_trials(opened.study)
    if failures:
        click.echo("")
        click.echo("failed or stopped trials:")
        for number, reason in failures:
            click.echo(f"  trial {number}: {reason}")


@main.command()
@click.argument("study")
@_study_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the front here instead of printing it (.csv, .json, or a plot: .png or .html).",
)
def pareto(
    study: str, storage: str | None, tracking_uri: str | None, fmt: str, out: Path | None
) -> None:
    """The Pareto front of STUDY (validation accuracy against the packed file's size)."""
    from .search.catalog import open_existing
    from .search.front import FRONT_SUFFIXES, write_front

    if out is not None and out.suffix not in FRONT_SUFFIXES:
        raise click.BadParameter(
            f"{out}: writes only {', '.join(FRONT_SUFFIXES)} files; name it so",
            param_hint="'--out'",
        )
    _check_out_folder(out)
    opened = open_existing(study, storage=storage, tracking_uri=tracking_uri)
    if out is not None:
        written = write_front(
            opened.study, out, list(opened.config.objectives), opened.config.constraints
        )
        names = " and ".join(str(p) for p in written.paths)
        trials = "" if out.suffix in (".png", ".html") else f" ({written.trials} trials)"
        click.echo(f"wrote {names}{trials}")
        return
    _echo_frame(_front_or_closest(opened), fmt)


@main.command()
@click.argument("study")
@_study_options
@click.option("--trial", "number", type=click.IntRange(min=0), help="Export this trial.")
@click.option(
    "--policy",
    type=click.Choice(POLICIES),
    help="Choose the trial: max-compression (smallest storage within --max-drop) or "
    "max-accuracy (best validation accuracy within --max-storage-kib).",
)
@click.option(
    "--max-drop",
    type=click.FloatRange(0, 1),
    help="Largest validation accuracy drop from dense, e.g. 0.01 [default: the "
    "study's max_accuracy_drop].",
)
@click.option(
    "--max-storage-kib",
    type=click.FloatRange(0, min_open=True),
    help="Largest packed model file, in KiB [default: the study's max_storage_bits].",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Settings file to write (.yaml or .json); printed when not given.",
)
def export(
    study: str,
    storage: str | None,
    tracking_uri: str | None,
    number: int | None,
    policy: str | None,
    max_drop: float | None,
    max_storage_kib: float | None,
    out: Path | None,
) -> None:
    """Export a trial's per-layer settings and metrics, chosen by --trial or --policy."""
    from .search.catalog import open_existing
    from .search.export import choose_trial, settings_document
    from .settings_file import write_settings

    if (number is None) == (policy is None):
        raise click.UsageError("give exactly one of --trial N and --policy")
    _check_out_folder(out)
    opened = open_existing(study, storage=storage, tracking_uri=tracking_uri)
    bits = None if max_storage_kib is None else max_storage_kib * BITS_PER_KIB
    trial, why = choose_trial(
        opened, number=number, policy=policy, max_drop=max_drop, max_storage_bits=bits
    )
    text = write_settings(settings_document(opened, trial, why), out)
    if out is None:
        click.echo(text, nl=False)
        return
    m = trial.user_attrs[TrialAttr.METRICS]
    payload = m.get(Metric.PAYLOAD_BITS)
    payload = "" if payload is None else f", payload {kib(payload):.2f} KiB"
    click.echo(
        f"wrote {out}: trial {trial.number} ({why}): val accuracy "
        f"{m[Metric.VAL_ACCURACY]:.4f} (drop {m[Metric.ACCURACY_DROP]:+.4f}), "
        f"packed file {kib(m[Metric.STORAGE_BITS]):.2f} KiB{payload} "
        f"({m[Metric.COMPRESSION_RATIO]:.1f}x)"
    )


def _no_front(opened) -> str:
    """Why ``show`` has no front to print: the constraints no trial meets, else no completed
    trial (``yet`` only while the study has budget left)."""
    from .search.catalog import study_budget, study_state
    from .search.feasibility import infeasible_note

    study, config = opened.study, opened.config
    if note := infeasible_note(study, config.constraints):
        return f"none: {note}"
    spent = study_state(study, study_budget(study, config.budget.trials)) == "finished"
    return "none: no trial completed" if spent else "no feasible trial yet"


def _front_or_closest(opened):
    """The front; when no completed trial is feasible, every completed trial, the closest to
    the constraints first, with a warning line naming what they break.

    Raises:
        NoTrialError: no trial completed.
    """
    from .search.feasibility import infeasible_note
    from .search.front import closest_table, front_table

    table = front_table(opened.study, list(opened.config.objectives))
    if not table.empty:
        return table
    note = infeasible_note(opened.study, opened.config.constraints)
    if note is None:
        raise NoTrialError(f"study {opened.config.name!r} has no completed trial")
    click.echo(f"warning: {note}; listed: every completed trial, the closest first", err=True)
    return closest_table(opened.study, list(opened.config.objectives), opened.config.constraints)


def _frame_text(frame, fmt: str) -> str:
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "json":
        return frame.to_json(orient="records", indent=2) + "\n"
    return frame.to_string(index=False) + "\n"


def _echo_frame(frame, fmt: str) -> None:
    click.echo(_frame_text(frame, fmt), nl=False)


def _print_front(study, config) -> None:
    from .search.feasibility import infeasible_note
    from .search.front import front_table

    table = front_table(study, list(config.objectives))
    if table.empty:
        click.echo(infeasible_note(study, config.constraints) or "no trial completed")
        return
    click.echo(f"Pareto front of {study.study_name} ({len(table)} trials):")
    click.echo(table.to_string(index=False))


def _print_result(done: Compressed, out: Path, fmt: str) -> None:
    """Every stage, the storage per layer and the packed file's size."""
    result, file_bytes, header_bytes = done.result, done.info.file_bytes, done.info.header_bytes
    summary = result.storage.summary()
    if fmt == "json":
        stages = [
            {
                "stage": s.name,
                "val_accuracy": s.val_accuracy,
                "test_accuracy": s.test_accuracy,
                "seconds": s.seconds,
            }
            for s in result.stages
        ]
        click.echo(
            json.dumps(
                {
                    "stages": stages,
                    "storage": summary,
                    "uncompressed_layers": dict(result.uncompressed),
                    "file": str(out),
                    "file_bytes": file_bytes,
                    "header_bytes": header_bytes,
                },
                indent=2,
            )
        )
        return
    click.echo(f"{'stage':<16} {'val acc':>8} {'test acc':>8} {'seconds':>8}")
    for s in result.stages:
        click.echo(
            f"{s.name:<16} {s.val_accuracy:>8.4f} {_accuracy(s.test_accuracy):>8} "
            f"{s.seconds:>8.1f}"
        )
    click.echo("")
    click.echo(result.storage.to_frame().to_string(index=False))
    click.echo("")
    click.echo(_uncompressed_line(result.uncompressed))
    file_ratio = result.storage.model_dense_bits / (BITS_PER_BYTE * file_bytes)
    click.echo(
        f"weights: {result.storage.weight_ratio_no_index:.1f}x smaller without indices, "
        f"{result.storage.weight_ratio_with_index:.1f}x with indices; "
        f"whole model {file_ratio:.1f}x as a file ({result.storage.model_ratio:.1f}x its payload)"
    )
    click.echo(
        f"wrote {out}: {file_bytes} bytes = {header_bytes} header + "
        f"{file_bytes - header_bytes} payload "
        f"(accounted {summary[Metric.MODEL_STORED_BITS] / BITS_PER_BYTE:.0f} bytes)"
    )


@main.command()
@click.argument("model_file", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("data", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--trust-code",
    is_flag=True,
    help="Allow a file whose network is user code (module:function) to import and run it.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
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
        click.echo(json.dumps({**summary, "samples": len(y), "accuracy": accuracy}, indent=2))
        return
    correct = round(accuracy * len(y))
    click.echo(
        f"{model_file} on {data} ({keys[0]}, {keys[1]}): accuracy {accuracy:.4f} "
        f"({correct} of {len(y)})"
    )


@main.command("export-model")
@click.argument("model_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["onnx", "c"]),
    required=True,
    help="onnx: one .onnx file; c: a C99 header and source with a decoder and admm_predict.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="The .onnx file, or the folder for the C files [default: beside MODEL_FILE].",
)
@click.option(
    "--int8",
    is_flag=True,
    help="ONNX: uniformly quantized layers whose levels fit int8 as int8 weights and one "
    "scale (QDQ).",
)
@click.option(
    "--trust-code",
    is_flag=True,
    help="Allow a file whose network is user code (module:function) to import and run it "
    "(ONNX; C only for a format 2 file, which records no graph).",
)
@click.option(
    "--decode-layers",
    is_flag=True,
    help="C: admm_predict decodes each layer whole into a buffer first (faster, more RAM) "
    "instead of reading the weights from the compressed streams.",
)
@click.option(
    "--samples",
    type=click.Path(dir_okay=False, path_type=Path),
    help="C: write this .npz's raw test arrays as samples.bin for the harness main.c.",
)
@click.option(
    "--measure",
    type=click.Choice(["auto", "cortex-m4", "host", "none"]),
    default="auto",
    show_default=True,
    help="C: compile the export to measure code, constant data, RAM and stack; auto: for a "
    "Cortex-M4 if arm-none-eabi-gcc is installed, else for this computer if gcc is.",
)
def export_model(
    model_file: Path,
    fmt: str,
    out: Path | None,
    int8: bool,
    trust_code: bool,
    decode_layers: bool,
    samples: Path | None,
    measure: str,
) -> None:
    """Export a packed model (.admm) for deployment: ONNX, or C for microcontrollers."""
    if fmt == "onnx" and (decode_layers or samples):
        raise click.UsageError("--decode-layers and --samples apply to --format c only")
    if fmt == "onnx":
        from .deploy import export_onnx

        onnx_info = export_onnx(
            model_file, out or model_file.with_suffix(".onnx"), int8=int8, trust_code=trust_code
        )
        click.echo(onnx_info.summary())
        return
    if int8:
        raise click.UsageError("--int8 applies to --format onnx only")
    from .deploy import export_c

    c_info = export_c(
        model_file,
        out or model_file.with_suffix(""),
        decoded=decode_layers,
        trust_code=trust_code,
        samples=samples,
        target=measure,
    )
    click.echo(c_info.summary())


@main.command()
@click.argument("study", required=False)
@_study_options
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to bind; 127.0.0.1 keeps the UIs on this machine.",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=5000,
    show_default=True,
    help="Port of the MLflow UI.",
)
@click.option(
    "--dashboard-port",
    type=click.IntRange(1, 65535),
    default=8080,
    show_default=True,
    help="Port of the Optuna dashboard (where it is installed).",
)
@click.option("--no-dashboard", is_flag=True, help="Start only the MLflow UI.")
def ui(
    study: str | None,
    storage: str | None,
    tracking_uri: str | None,
    host: str,
    port: int,
    dashboard_port: int,
    no_dashboard: bool,
) -> None:
    """Start the MLflow UI (and the Optuna dashboard) on the stores of STUDY; Ctrl-C stops them.

    STUDY is a study file or a study name; without it the default stores are used.
    """
    from .preflight import check_store_folder
    from .ui import serve_ui

    storage, tracking_uri = _stores(study, storage, tracking_uri)
    check_store_folder(tracking_uri, "tracking URI")
    serve_ui(
        tracking_uri,
        None if no_dashboard else storage,
        host=host,
        port=port,
        dashboard_port=dashboard_port,
        echo=click.echo,
    )


def _stores(study: str | None, storage: str | None, tracking_uri: str | None) -> tuple[str, str]:
    """Optuna storage and MLflow URI: the options, else the study file's, else the defaults."""
    from .config import validate_study
    from .locations import resolve_storage, resolve_tracking

    config = None
    if study is not None and (study.endswith((".yaml", ".yml")) or Path(study).is_file()):
        config, _ = validate_study(Path(study))
    return resolve_storage(config, storage), resolve_tracking(config, tracking_uri)
