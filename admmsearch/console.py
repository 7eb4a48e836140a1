"""How the command line shows things and ends: one formatter for tables, CSV and JSON;
one-line errors and warnings with the exit status of their kind; a running study's progress;
the texts of a compression, a study, its front and its closing summary. The commands are in
:mod:`admmsearch.cli`, their options in :mod:`admmsearch.options`; nothing here imports torch,
Optuna or MLflow at module level.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .errors import AdmmSearchError, AdmmSearchWarning
from .record import BITS_PER_BYTE, Metric, TrialAttr, kib
from .redact import redact_text

if TYPE_CHECKING:
    import optuna
    import pandas as pd

    from .compression import Compressed

__all__ = [
    "FORMATS",
    "URLS",
    "CommandGroup",
    "StudyProgress",
    "check_text",
    "compressed_text",
    "duration",
    "echo",
    "echo_epoch",
    "error_line",
    "exported_line",
    "facts_text",
    "flat",
    "layers_line",
    "render",
    "report_text",
    "reproduction",
    "reproduction_text",
    "sensitivity_text",
    "running",
    "show_warning",
    "summary_text",
    "thread_failed",
    "trial_line",
]

#: The output formats of every command that prints data.
FORMATS = ("table", "csv", "json")


def render(data: Any, fmt: str) -> str:
    """``data`` (a pandas frame, a list of records, or a mapping) as a table, CSV or JSON;
    a table shows a missing value (None, NaN) as ``–``, CSV as an empty cell, JSON as null."""
    import pandas as pd

    if fmt == "json":
        if isinstance(data, pd.DataFrame):
            return data.to_json(orient="records", indent=2) + "\n"
        return json.dumps(data, indent=2, default=_plain) + "\n"
    if isinstance(data, Mapping):
        if fmt == "table":
            return facts_text(list(data.items()))
        data = [data]
    frame = data if isinstance(data, pd.DataFrame) else _records_frame(list(data))
    if fmt == "csv":
        return frame.to_csv(index=False)
    # None stays "None" in an object column, and an integer column prints <NA>
    mixed = [c for c in frame if frame[c].dtype == object or frame[c].dtype == "Int64"]
    frame = frame.assign(
        **{c: frame[c].astype(object).where(frame[c].notna(), "–") for c in mixed}
    )
    # accuracies to 4 decimals whatever their values (pandas trims a column of 0.9930s to 0.993)
    exact = {c: _accuracy_text for c in frame if _is_accuracy(c) and frame[c].dtype == float}
    return frame.to_string(index=False, na_rep="–", formatters=exact) + "\n"


def _is_accuracy(column: str) -> bool:
    return column.endswith("accuracy") or column == "accuracy_drop"


def _accuracy_text(value: float) -> str:
    return "–" if value != value else f"{value:.4f}"


def _records_frame(records: list[Any]) -> pd.DataFrame:
    """Records as a frame; a column of integers with gaps stays integers (pandas would make
    it float: a budget of 6 printed as 6.0 beside a study without one)."""
    import pandas as pd

    frame = pd.DataFrame(records)
    for column in frame:
        values = [r.get(column) for r in records if isinstance(r, Mapping)]
        present = [v for v in values if v is not None]
        whole = all(isinstance(v, int) and not isinstance(v, bool) for v in present)
        if present and whole and len(present) < len(values):
            frame[column] = frame[column].astype("Int64")
    return frame


def _plain(value: Any) -> Any:
    """What JSON cannot write as it is: paths, tuples and the like, as text or lists."""
    if hasattr(value, "item"):
        return value.item()
    return list(value) if isinstance(value, set | tuple) else str(value)


def echo(data: Any, fmt: str) -> None:
    """Print ``data`` (see :func:`render`) on stdout."""
    click.echo(render(data, fmt), nl=False)


def facts_text(facts: Sequence[tuple[str, Any]]) -> str:
    """``key  value`` lines, the keys in one column."""
    width = max((len(k) for k, _ in facts), default=0)
    return "".join(f"{k:<{width}}  {v}\n" for k, v in facts)


def error_line(exc: BaseException, urls: Sequence[str | None], expected: bool) -> str:
    """The one line an error prints: the message of an error admmsearch raised on purpose
    (``expected``), else the exception's type and message and where to see the traceback;
    passwords of ``urls`` masked."""
    if expected:
        return f"error: {redact_text(str(exc), *urls)}"
    text = redact_text(f"{type(exc).__name__}: {exc}", *urls)
    return f"error: {text} (run with --debug for the traceback)"


def show_warning(
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


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 57 s`` or ``1 h 02 min``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


# -- the frame: errors, signals, exit statuses ---------------------------------------------

#: Where ``--storage`` and ``--tracking-uri`` values wait to be masked (a context's ``meta``).
URLS = "admmsearch.urls"


class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an interruption so that a running trial ends as Ctrl-C ends it."""


class _Failed(Exception):
    """An error of admmsearch's raised once the study ran: a failure while running."""


class CommandGroup(click.Group):
    """The command line's frame: every error is one line on stderr, ``error: ...``, with the
    exit status of its kind: 2 for bad input (an error admmsearch raised before the study ran),
    1 for a failure while running (:func:`running`) or an unexpected error, 130 for Ctrl-C and
    143 for SIGTERM, which stops a command as Ctrl-C does. ``--debug`` shows the traceback
    instead."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            with warnings.catch_warnings(), _sigterm_interrupts():
                warnings.showwarning = show_warning
                code = super().main(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:  # bare `admmsearch`: its help
            click.echo(exc.ctx.get_help())
            sys.exit(0)
        except click.ClickException as exc:
            hint = f" (see: {exc.ctx.command_path} --help)" if getattr(exc, "ctx", None) else ""
            click.echo(f"error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort as exc:
            stopped = isinstance(exc.__cause__, _Terminated)
            click.echo(f"error: {'stopped by SIGTERM' if stopped else 'interrupted'}", err=True)
            sys.exit(128 + signal.SIGTERM if stopped else 130)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - every error is one line, bugs included
            if ctx.params.get("debug"):
                raise exc.__cause__ if isinstance(exc, _Failed) else exc from None
            urls = [*ctx.meta.get(URLS, []), *_env_urls()]
            cause = exc.__cause__ if isinstance(exc, _Failed) else exc
            click.echo(error_line(cause, urls, isinstance(cause, AdmmSearchError)), err=True)
            sys.exit(1 if isinstance(exc, _Failed) or not isinstance(exc, AdmmSearchError) else 2)


def _env_urls() -> list[str | None]:
    return [os.environ.get("ADMMSEARCH_STORAGE"), os.environ.get("MLFLOW_TRACKING_URI")]


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While a command runs, SIGTERM (``kill``, a container or job scheduler stopping it)
    interrupts it as Ctrl-C does, so the command ends what it runs cleanly."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise _Terminated(f"signal {signum}")

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


@contextmanager
def running() -> Iterator[None]:
    """The study runs: an error of admmsearch's from here on is a failure while running."""
    try:
        yield
    except AdmmSearchError as exc:
        raise _Failed(str(exc)) from exc


def thread_failed(meta: dict[str, Any], args: threading.ExceptHookArgs) -> None:
    """A background thread that dies says so in one line; ``--debug`` shows the traceback."""
    if args.exc_type is SystemExit:
        return
    urls = [*meta.get(URLS, []), *_env_urls()]
    text = redact_text(f"{args.exc_type.__name__}: {args.exc_value}", *urls).splitlines()
    name = args.thread.name if args.thread is not None else "?"
    first = text[0] if text else ""
    click.echo(f"warning: thread {name} stopped: {first} (--debug shows the traceback)", err=True)


# -- a running study ----------------------------------------------------------------------


def trial_line(trial: optuna.trial.FrozenTrial) -> str:
    """One finished trial as a person reads it: number, origin, rung, accuracy, storage."""
    m, attrs = trial.user_attrs.get(TrialAttr.METRICS) or {}, trial.user_attrs
    where = _origin(attrs)
    if attrs.get(TrialAttr.RUNG) is not None:
        where += f", rung {attrs[TrialAttr.RUNG]}"
    head = f"trial {trial.number} ({where})"
    if trial.state.name != "COMPLETE" or not m:
        reason = attrs.get(TrialAttr.FAIL_REASON) or trial.state.name.lower()
        return f"{head}: {trial.state.name.lower()}: {reason}"
    values = trial.constraints or {}  # Optuna's dict, name -> value (met at 0 or below)
    feasible = all(v <= 0 for v in (values.values() if isinstance(values, Mapping) else values))
    return (
        f"{head}: val {m[Metric.VAL_ACCURACY]:.4f}, {kib(m[Metric.STORAGE_BITS]):.2f} KiB, "
        f"{'feasible' if feasible else 'infeasible'}"
    )


def _origin(attrs: Mapping[str, Any]) -> str:
    """The trial's origin (``search.origin``) with its detail: the prior's family, the trial
    a promotion continues."""
    from .search.origin import trial_origin

    origin = trial_origin(attrs)
    if origin == "prior":
        return f"prior {attrs[TrialAttr.PRIOR].get('family')}"
    if origin == "promoted":
        return f"promoted from {attrs[TrialAttr.CONTINUES]}"
    return origin


@dataclass
class StudyProgress:
    """A running study shown on stderr: the dense training by epoch, the sensitivity pass by
    unit, then one line per finished trial above one bar for the study (trials, or epochs
    when the budget is in epochs), whatever the number of workers. A tqdm bar where stderr is
    a terminal, plain lines otherwise (CI logs, files).

    Attributes:
        name: the study's name.
        trials, epochs: its budget (None: no limit of that kind).
        tty: draw bars (else plain lines).
    """

    name: str
    trials: int | None = None
    epochs: int | None = None
    tty: bool = field(default_factory=lambda: sys.stderr.isatty())
    done: int = 0
    spent: int = 0
    started: float = field(default_factory=time.monotonic)
    _bar: Any = None
    _resumed: int = 0

    def events(self) -> Any:
        """The study's events (:class:`admmsearch.search.context.StudyEvents`) for this view."""
        from .search.context import StudyEvents

        return StudyEvents(self.dense_epoch, self.sensitivity_unit, None, self.trial_done)

    def resume_at(self, already: Any) -> None:
        """Count on from what the study spent before this run (``already``: its
        :class:`admmsearch.search.schedule.Spent`), so a resumed run's tally and bar show the
        study's trials and epochs, not this run's alone."""
        self.done, self.spent = already.trials, already.epochs
        self._resumed = already.epochs if self.epochs else already.trials

    def _line(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            click.echo(text, err=True)

    def dense_epoch(self, epoch: int, epochs: int, loss: float, accuracy: float) -> None:
        self._line(f"dense model: epoch {epoch}/{epochs}, loss {loss:.4f}, val {accuracy:.4f}")

    def sensitivity_unit(self, unit: str, measured: int, units: int) -> None:
        self._line(f"sensitivity: {unit} measured ({measured}/{units})")

    def trial_done(self, trial: optuna.trial.FrozenTrial) -> None:
        counts = not trial.user_attrs.get(TrialAttr.INTERRUPTED)
        epochs = int(trial.user_attrs.get(TrialAttr.EPOCHS) or 0) if counts else 0
        self.done, self.spent = self.done + counts, self.spent + epochs
        self._line(f"{trial_line(trial)}{self._tally()}")
        if self.tty:
            self._bar_now().update(epochs if self.epochs is not None else int(counts))

    def _tally(self) -> str:
        if self.epochs is not None:
            return f"  [{self.spent}/{self.epochs} epochs]"
        return f"  [{self.done}/{self.trials} trials]" if self.trials else ""

    def _bar_now(self) -> Any:
        if self._bar is None:
            from tqdm.auto import tqdm

            unit, total = ("epoch", self.epochs) if self.epochs else ("trial", self.trials)
            self._bar = tqdm(
                total=total, initial=self._resumed, desc=self.name, unit=unit, file=sys.stderr
            )
        return self._bar

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# -- texts --------------------------------------------------------------------------------


def summary_text(facts: Mapping[str, Any], name: str, study_file: str) -> str:
    """The closing lines of ``run``: what finished, how long it took, why it stopped, and the
    next commands."""
    return (
        f"{name}: {facts['finished']} trials finished ({facts['states']}) in "
        f"{duration(facts['seconds'])} this run, {facts['epochs']} training epochs in all; "
        f"stopped: {facts['why']}\n"
        f"next: admmsearch show {name}  |  admmsearch export {name} --out best.yaml  |  "
        f"admmsearch ui {study_file}\n"
    )


def compressed_text(done: Compressed, out: str) -> str:
    """Every stage, the storage per layer and the packed file's size, as ``compress`` prints
    them."""
    result, info = done.result, done.info
    lines = [f"{'stage':<16} {'val acc':>8} {'test acc':>8} {'seconds':>8}"]
    for s in result.stages:
        test = "–" if s.test_accuracy is None else f"{s.test_accuracy:.4f}"
        lines.append(f"{s.name:<16} {s.val_accuracy:>8.4f} {test:>8} {s.seconds:>8.1f}")
    storage, ratio = result.storage, result.storage.model_dense_bits
    file_ratio = ratio / (BITS_PER_BYTE * info.file_bytes)
    lines += [
        "",
        storage.to_frame().to_string(index=False),
        "",
        layers_line(result.folding, result.uncompressed),
        f"weights: {storage.weight_ratio_no_index:.1f}x smaller without indices, "
        f"{storage.weight_ratio_with_index:.1f}x with indices; whole model {file_ratio:.1f}x as a "
        f"file ({storage.model_ratio:.1f}x its payload)",
        f"wrote {out}: {info.file_bytes} bytes = {info.header_bytes} header + "
        f"{info.file_bytes - info.header_bytes} payload (accounted "
        f"{storage.summary()[Metric.MODEL_STORED_BITS] / BITS_PER_BYTE:.0f} bytes)",
    ]
    return "\n".join(lines) + "\n"


def layers_line(folding: Any, uncompressed: Mapping[str, str]) -> str:
    """What the packed files hold beside the compressed layers (``fold.describe_layers``):
    the BatchNorms folded into their convolutions, and the modules with a weight stored raw."""
    from .fold import describe_layers

    return describe_layers(folding.pairs, uncompressed, folding.skipped)


def echo_epoch(stage: str, epoch: int, loss: float) -> None:
    """One line per training epoch of ``compress``, on stderr."""
    click.echo(f"  {stage:<16} epoch {epoch + 1:>3}  loss {loss:.4f}", err=True)


def flat(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Records as a table, their nested values (per-layer settings) left to JSON; a column of
    integers with gaps stays integers (:func:`_records_frame`)."""
    plain = [{k: v for k, v in r.items() if not isinstance(v, dict)} for r in records]
    return _records_frame(plain)


def exported_line(out: Any, trial: optuna.trial.FrozenTrial, why: str) -> str:
    """What ``export --out`` says it wrote: the trial, why it was chosen, its figures."""
    m = trial.user_attrs[TrialAttr.METRICS]
    payload = m.get(Metric.PAYLOAD_BITS)
    payload = "" if payload is None else f", payload {kib(payload):.2f} KiB"
    return (
        f"wrote {out}: trial {trial.number} ({why}): val accuracy "
        f"{m[Metric.VAL_ACCURACY]:.4f} (drop {m[Metric.ACCURACY_DROP]:+.4f}), "
        f"packed file {kib(m[Metric.STORAGE_BITS]):.2f} KiB{payload} "
        f"({m[Metric.COMPRESSION_RATIO]:.1f}x)"
    )


_HELD = (
    Metric.VAL_ACCURACY,
    Metric.TEST_ACCURACY,
    Metric.ACCURACY_DROP,
    Metric.STORAGE_BITS,
    Metric.PAYLOAD_BITS,
    Metric.COMPRESSION_RATIO,
)


def reproduction(done: Compressed, settings: Path) -> dict[str, Any]:
    """A settings file's compression beside the figures its trial recorded, as JSON: the
    settings file, its study and trial, and the exported metrics beside the new ones."""
    doc = done.document or {}
    return {
        "settings": str(settings),
        "study": doc.get("study"),
        "trial": doc.get("trial"),
        **done.to_dict(),
        "exported": doc.get("metrics", {}),
    }


def reproduction_text(done: Compressed) -> str:
    """The figures a settings file's compression held against its trial's."""
    doc = done.document or {}
    exported = doc.get("metrics", {})
    lines = [f"\nagainst trial {doc.get('trial')} of study {doc.get('study')} (exported figures):"]
    for key in _HELD:
        if key in exported and key in done.metrics:
            lines.append(
                f"  {key:<30} {done.metrics[key]:>14.4f}  exported {exported[key]:>14.4f}"
            )
    return "\n".join(lines) + "\n"


def report_text(report: Mapping[str, Any]) -> str:
    """``show``: the facts, the front (or why there is none), failures, and every trial."""
    parts = [facts_text(list(report["facts"].items()))]
    front, note = report.get("front") or [], report.get("note")
    if front and not note:
        parts.append("\nPareto front:\n" + render(flat(front), "table"))
    else:
        parts.append(f"\nPareto front: none: {note}\n")
        if front:
            parts.append("closest trials:\n" + render(flat(front), "table"))
    if report.get("failures"):
        lines = "".join(f"  trial {f['trial']}: {f['reason']}\n" for f in report["failures"])
        parts.append("\nfailed or stopped trials:\n" + lines)
    if "trials" in report:
        parts.append("\nevery trial:\n" + render(flat(report["trials"]), "table"))
    return "".join(parts)


def check_text(done: Any) -> str:
    """``check``: what the study compresses, on what, within what budget, at what cost."""
    units = [asdict(r) for r in done.units]
    weights = sum(r["weights"] for r in units)
    s = done.samples
    cost = "no limit in epochs (a timeout alone)"
    if done.epochs is not None:
        cost = (
            f"about {done.epochs} training epochs (the dense model's included), about "
            f"{duration(done.seconds)} of training at {done.epoch_seconds:.2f} s an epoch "
            "(timed on a few batches; evaluation, the sensitivity pass and tracking add to it)"
        )
    facts = [
        ("model", f"{done.model}: {len(units)} units to compress, {weights:,} weights"),
        (
            "data",
            f"{s['train']:,} train / {s['val']:,} validation / {s['test']:,} test; "
            f"input {tuple(done.input_shape)}, {done.classes} classes",
        ),
        ("stores", f"{done.storage}; {done.tracking_uri}"),
        ("budget", ", ".join(f"{k} {v}" for k, v in done.budget.items())),
        ("estimate", cost),
        *done.schedule.items(),
    ]
    return facts_text(facts) + "\n" + render(units, "table")


def sensitivity_text(result: Any, paths: Sequence[Any]) -> str:
    """``sensitivity``: the summary per layer and the files written."""
    how = "from the cache" if result.cached else f"measured in {result.seconds:.1f} s"
    return (
        f"dense validation accuracy {result.dense_val_accuracy:.4f}; {len(result.rows)} points, "
        f"{how}. Within 1 point of dense, each layer alone:\n"
        f"{result.summary(0.01).to_string(index=False)}\n"
        f"wrote {', '.join(str(p) for p in paths)}\n"
    )
