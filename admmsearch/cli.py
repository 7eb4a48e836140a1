"""The ``admmsearch`` command. Thin: each command parses, calls the library, prints the result."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import torch
import yaml
from tqdm.auto import tqdm

from .admm import RhoSchedule
from .config import validate_study
from .data import load_dataset
from .errors import AdmmSearchError
from .front import front_frame
from .models import compressible_layers, create_model
from .packing import pack_model
from .pipeline import (
    AdmmSettings,
    PipelineHooks,
    PipelineResult,
    PipelineSettings,
    QuantRetrainSettings,
    run_pipeline,
)
from .plan import Plan
from .study import prepare, run_parallel, run_study
from .train import TrainSettings

__all__ = ["main"]


class _Group(click.Group):
    """Turns our errors into one line on stderr and exit code 2 (traceback only with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AdmmSearchError as exc:
            if ctx.params.get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
def main(debug: bool) -> None:
    """Per-layer joint pruning and quantization of neural networks by ADMM."""


def _load_plan(path: Path | None, keep: float | None, bits: int | None,
               layers: list[str]) -> Plan:
    if path is not None:
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise AdmmSearchError(f"plan file {path}: {exc}") from None
        return Plan.from_dict(data or {})
    setting = {k: v for k, v in (("keep", keep), ("bits", bits)) if v is not None}
    return Plan.uniform(layers, **setting)


@main.command()
@click.option("--model", "model_name", default="digits-cnn", show_default=True,
              help="Model name, torchvision:<name> or module:function.")
@click.option("--dataset", default="digits", show_default=True,
              help="Dataset name, a .npz file or module:function.")
@click.option("--plan", "plan_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Per-layer plan (YAML: layers: {name: {keep, bits|clusters, structured}}).")
@click.option("--keep", type=float, default=0.1, show_default=True,
              help="Keep ratio for every layer when no --plan is given.")
@click.option("--bits", type=int, default=4, show_default=True,
              help="Bits for every layer when no --plan is given.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default="model.admm",
              show_default=True, help="Where to write the packed compressed model.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
def compress(model_name: str, dataset: str, plan_path: Path | None, keep: float, bits: int,
             seed: int, device: str, out: Path, fmt: str) -> None:
    """Train, compress to a per-layer plan and write the packed model, without any search."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise AdmmSearchError("--device cuda: no CUDA device is available here")
    torch.manual_seed(seed)
    data = load_dataset(dataset, seed=seed)
    model = create_model(model_name, num_classes=data.num_classes, input_shape=data.input_shape)
    plan = _load_plan(plan_path, keep, bits, list(compressible_layers(model)))
    hooks = PipelineHooks(on_epoch=lambda s, e, loss: click.echo(
        f"  {s:<16} epoch {e + 1:>3}  loss {loss:.4f}", err=True))
    result = run_pipeline(model, data, plan, _settings(seed), device=device, hooks=hooks)
    info = pack_model(model.cpu(), list(compressible_layers(model)), out)
    _print_result(result, info.file_bytes, info.header_bytes, out, fmt)


def _study_options(fn):
    """Options every command that touches a study takes."""
    fn = click.option("--storage", envvar=None, default=None,
                      help="Optuna storage URL (default: study file, $ADMMSEARCH_STORAGE, "
                           "else sqlite:///admmsearch.db).")(fn)
    fn = click.option("--tracking-uri", default=None,
                      help="MLflow tracking URI (default: study file, $MLFLOW_TRACKING_URI, "
                           "else the local mlruns/).")(fn)
    return fn


def _epoch_bar(enabled: bool):
    """A second progress bar for the epochs inside the current trial."""
    bar = tqdm(desc="epochs", unit="epoch", position=1, leave=False, disable=not enabled)

    def on_epoch(stage: str, epoch: int, loss: float) -> None:
        bar.set_postfix_str(f"{stage} loss {loss:.3f}")
        bar.update(1)

    return bar, on_epoch


@main.command()
@click.argument("study_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--trials", type=click.IntRange(min=1), help="Trials in all (overrides budget).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
              help="Seconds before no new trial starts.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes on this machine.")
@_study_options
def run(study_file: Path, trials: int | None, timeout: float | None, jobs: int,
        storage: str | None, tracking_uri: str | None) -> None:
    """Launch (or resume) the study in STUDY_FILE; print its Pareto front at the end."""
    config, layers = validate_study(study_file)
    ctx = prepare(config, layers, storage=storage, tracking_uri=tracking_uri)
    if jobs > 1:
        study = run_parallel(study_file, ctx, jobs, trials=trials, timeout=timeout)
    else:
        bar, on_epoch = _epoch_bar(sys.stderr.isatty())
        try:
            study = run_study(ctx, trials=trials, timeout=timeout, progress=True,
                              on_epoch=on_epoch)
        finally:
            bar.close()
    _print_front(study, list(config.objectives))


@main.command()
@click.argument("study_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--trials", type=click.IntRange(min=1), help="Trials in all (overrides budget).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True))
@_study_options
def worker(study_file: Path, trials: int | None, timeout: float | None, storage: str | None,
           tracking_uri: str | None) -> None:
    """Join the study in STUDY_FILE as one more worker (same storage), e.g. on another machine."""
    config, layers = validate_study(study_file)
    ctx = prepare(config, layers, storage=storage, tracking_uri=tracking_uri)
    run_study(ctx, trials=trials, timeout=timeout, progress=False)


def _print_front(study, objectives: list[str]) -> None:
    frame = front_frame(study, objectives)
    if frame.empty:
        click.echo("no feasible finished trial yet")
        return
    click.echo(frame.to_string(index=False))


def _settings(seed: int) -> PipelineSettings:
    """Stage settings that suit the small reference models (a few minutes on a CPU)."""
    admm = AdmmSettings(train=TrainSettings(epochs=8, lr=0.02, batch_size=32),
                        rho=RhoSchedule(1e-2, 1.5, maximum=1.0))
    return PipelineSettings(
        pretrain=TrainSettings(epochs=15, lr=0.05, batch_size=32),
        admm_prune=admm,
        retrain=TrainSettings(epochs=4, lr=0.01, batch_size=32),
        admm_quantize=admm,
        quant_retrain=QuantRetrainSettings(TrainSettings(epochs=2, lr=0.005, batch_size=32)),
        seed=seed,
    )


def _print_result(result: PipelineResult, file_bytes: int, header_bytes: int, out: Path,
                  fmt: str) -> None:
    summary = result.storage.summary()
    if fmt == "json":
        stages = [{"stage": s.name, "val_accuracy": s.val_accuracy,
                   "test_accuracy": s.test_accuracy, "seconds": s.seconds}
                  for s in result.stages]
        click.echo(json.dumps({"stages": stages, "storage": summary, "file": str(out),
                               "file_bytes": file_bytes, "header_bytes": header_bytes},
                              indent=2))
        return
    click.echo(f"{'stage':<16} {'val acc':>8} {'test acc':>8} {'seconds':>8}")
    for s in result.stages:
        click.echo(f"{s.name:<16} {s.val_accuracy:>8.4f} {s.test_accuracy:>8.4f} "
                   f"{s.seconds:>8.1f}")
    click.echo("")
    click.echo(result.storage.to_frame().to_string(index=False))
    click.echo("")
    click.echo(f"weights: {result.storage.weight_ratio_no_index:.1f}x smaller without indices, "
               f"{result.storage.weight_ratio_with_index:.1f}x with indices; "
               f"whole model {result.storage.model_ratio:.1f}x")
    click.echo(f"wrote {out}: {file_bytes} bytes = {header_bytes} header + "
               f"{file_bytes - header_bytes} payload "
               f"(accounted {summary['model_stored_bits'] / 8:.0f} bytes)")
