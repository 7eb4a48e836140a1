"""The ``admmsearch`` command. Thin: each command parses, calls the library, prints the result."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import torch
import yaml

from .admm import RhoSchedule
from .data import load_dataset
from .errors import AdmmSearchError
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
