"""The compression pipeline, as plain functions called in order.

    dense model -> BatchNorm folding -> ADMM pruning -> hard prune + masked retraining
                -> ADMM quantization of the survivors -> iterative hard quantization + retraining
                -> finalize -> storage accounting

Each stage is optional and returns a ``StageResult`` with its accuracy, time and per-layer
figures. Without the ADMM pruning stage the hard prune is one-shot magnitude pruning, the
classic baseline. With ``progressive_steps > 1`` the pruning target is reached in steps whose
keep ratios fall geometrically, each step starting from the last one's pruned model. Every
training stage runs the user's training hooks (``settings.training``, see
:mod:`admmsearch.hooks`). The settings types live in :mod:`admmsearch.settings`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize

from .admm import AdmmState, Residuals
from .constraints import Constraint, nearest_codes
from .data import DataSplits
from .errors import DivergenceError
from .fold import Folding, fold_batchnorm, remove_reparametrizations
from .hooks import load_recipe
from .masking import Quantized, finalize, mask_of, prune_, quantize_
from .models import compressible_layers, output_channels, uncompressed_layers
from .plan import LayerPlan, Plan
from .settings import AdmmSettings, PipelineSettings, QuantRetrainSettings, TrainSettings
from .storage import StorageReport, model_storage
from .timing import Timings, active, part
from .train import evaluate, fit, fit_best

__all__ = [
    "AdmmSettings",
    "PipelineHooks",
    "PipelineResult",
    "PipelineSettings",
    "PrunedState",
    "QuantRetrainSettings",
    "StageResult",
    "check_plan",
    "layer_figures",
    "run_pipeline",
    "stage_steps",
]


@dataclass(frozen=True)
class StageResult:
    """What one stage did: accuracy after it, its wall time and per-layer figures.

    ``test_accuracy`` is measured for the dense stage (the reference of every drop) and after
    the last stage (the pipeline's result) only; it is None for the stages in between, which
    are judged on the validation split alone. ``seconds`` counts the stage's training steps.

    ``projected_val_accuracy``: for a stage that starts with a hard projection (the prune
    before masked retraining, the quantization before quantized retraining), the validation
    accuracy just after it, before any retraining. ``kept_epoch``: for a stage that keeps its
    best epoch (``TrainSettings.keep_best``), the epoch it ended with (1-based; with several
    rounds, the last round's).
    """

    name: str
    val_accuracy: float
    test_accuracy: float | None
    seconds: float
    layers: Mapping[str, Mapping[str, float]]
    losses: tuple[float, ...] = ()
    residuals: tuple[Residuals, ...] = ()
    projected_val_accuracy: float | None = None
    kept_epoch: int | None = None


@dataclass(frozen=True)
class PipelineResult:
    """Every stage's figures, the storage of the compressed layers, the plan, and the modules
    with a weight that stayed uncompressed (name -> type, stored raw)."""

    stages: tuple[StageResult, ...]
    storage: StorageReport
    plan: Plan
    uncompressed: Mapping[str, str] = field(default_factory=dict)
    folding: Folding = Folding()

    @property
    def dense(self) -> StageResult:
        return self.stages[0]

    @property
    def final(self) -> StageResult:
        return self.stages[-1]


@dataclass(frozen=True)
class PipelineHooks:
    """Optional callbacks: progress per epoch, and a check after every stage (may raise)."""

    on_epoch: Callable[[str, int, float], None] | None = None
    on_stage: Callable[[StageResult], None] | None = None


def layer_figures(layers: Mapping[str, nn.Module]) -> dict[str, dict[str, float]]:
    """Per layer: weights, nonzeros, kept fraction and distinct nonzero values right now."""
    out = {}
    with torch.no_grad():
        for name, module in layers.items():
            w = module.weight.detach()
            nz = w[w != 0]
            out[name] = {
                "numel": w.numel(),
                "nonzeros": int(nz.numel()),
                "keep": nz.numel() / w.numel(),
                "distinct": int(nz.unique().numel()),
            }
    return out


class _Run:
    """The state one pipeline run threads through its stages."""

    def __init__(
        self,
        model: nn.Module,
        data: DataSplits,
        plan: Plan,
        s: PipelineSettings,
        layers: Mapping[str, nn.Module],
        hooks: PipelineHooks,
    ) -> None:
        self.model, self.data, self.plan, self.s = model, data, plan, s
        self.layers, self.hooks = layers, hooks
        self.recipe = load_recipe(s.training)
        self.stages: list[StageResult] = []
        self.folding = Folding()
        self.timings = active() or Timings()  # run_pipeline activates one
        self.dense_accuracy: tuple[float, float] | None = None  # (val, test), when known
        self.projected: float | None = None  # set by a hard projection, read by record()
        self.kept_epoch: int | None = None  # set by a keep_best training, read by record()
        self.kept_accuracy: float | None = None  # its validation accuracy, known already

    def fold(self) -> None:
        """Make weight reparametrizations plain weights (they would clash with the masks, and
        the effective weight is what is stored), then fold BatchNorm into the convolutions, if
        the settings ask for it."""
        remove_reparametrizations(self.model)
        if self.s.fold_batchnorm:
            self.folding = fold_batchnorm(self.model)

    def seed(self) -> int:
        return self.s.seed * 1000 + len(self.stages)

    def _val_accuracy(self) -> float:
        """The model's validation accuracy; a keep_best training measured it already."""
        if self.kept_accuracy is not None:
            return self.kept_accuracy
        return evaluate(self.model, self.data.x_val, self.data.y_val)

    def _test_accuracy(self) -> float:
        return evaluate(self.model, self.data.x_test, self.data.y_test)

    def project_and_measure(self) -> None:
        """Note the validation accuracy right after a hard projection (before retraining)."""
        self.projected = evaluate(self.model, self.data.x_val, self.data.y_val)

    def test_final(self) -> None:
        """Measure the test accuracy of the last stage (the pipeline's result)."""
        last = self.stages[-1]
        if last.test_accuracy is None:
            self.stages[-1] = dataclasses.replace(last, test_accuracy=self._test_accuracy())

    def clock(self) -> tuple[float, float]:
        """Where a stage starts: wall time, and the seconds spent outside training so far."""
        return time.perf_counter(), sum(self.timings.seconds.values())

    def record(
        self, name: str, start: tuple[float, float], losses=(), residuals=(), extra=None
    ) -> None:
        # training time only: neither the evaluation below nor what the stage spent on
        # evaluation (a best-epoch retraining) or codebooks (see admmsearch.timing)
        wall, outside = start
        seconds = time.perf_counter() - wall - (sum(self.timings.seconds.values()) - outside)
        figures = layer_figures(self.layers)
        for layer, values in (extra or {}).items():
            figures[layer].update(values)
        known = self.dense_accuracy if name == "dense" and self.s.pretrain is None else None
        if known is None and name == "dense":  # the reference every drop is measured from
            known = (self._val_accuracy(), self._test_accuracy())
        result = StageResult(
            name=name,
            val_accuracy=known[0] if known else self._val_accuracy(),
            test_accuracy=known[1] if known else None,
            seconds=seconds,
            layers=figures,
            losses=tuple(losses),
            residuals=tuple(residuals),
            projected_val_accuracy=self.projected,
            kept_epoch=self.kept_epoch,
        )
        self.projected = self.kept_epoch = self.kept_accuracy = None
        self.stages.append(result)
        if self.hooks.on_stage is not None:
            self.hooks.on_stage(result)

    def train(
        self,
        name: str,
        s: TrainSettings,
        penalty=None,
        after_backward=None,
        on_step=None,
        after_epoch: Callable[[], None] | None = None,
        round_: int = 0,
    ) -> list[float]:
        """``fit`` with the stage's seed (offset per round), progress hook and divergence
        message; :func:`fit_best` for a stage that keeps its best epoch."""
        hook = self.hooks.on_epoch

        def on_epoch(epoch: int, loss: float) -> None:
            if after_epoch is not None:
                after_epoch()
            if hook is not None:
                hook(name, epoch, loss)

        try:
            if s.keep_best and penalty is None:
                losses, self.kept_epoch, self.kept_accuracy = fit_best(
                    self.model,
                    self.data,
                    s,
                    seed=self.seed() + 7919 * round_,
                    on_epoch=on_epoch,
                    recipe=self.recipe,
                    stage=name,
                )
                return losses
            return fit(
                self.model,
                self.data,
                s,
                seed=self.seed() + 7919 * round_,
                penalty=penalty,
                after_backward=after_backward,
                on_step=on_step,
                on_epoch=on_epoch,
                recipe=self.recipe,
                stage=name,
            )
        except DivergenceError as exc:
            raise DivergenceError(f"stage {name}: {exc}") from exc


def stage_steps(data: DataSplits, s: TrainSettings) -> int:
    """Optimizer steps of a stage: its epochs times the batches of the training split."""
    return s.epochs * math.ceil(len(data.y_train) / s.batch_size)


def _admm(run: _Run, name: str, constraints: Mapping[str, Constraint], s: AdmmSettings) -> None:
    """One ADMM stage over ``constraints``; the weights end near, not on, their sets.

    Z and U are updated ``s.rho.updates`` times, spread evenly over the stage's optimizer steps
    (at most once a step), the last time after the last step.
    """
    start = run.clock()
    total = stage_steps(run.data, s.train)
    state = AdmmState(run.layers, constraints, s.rho, max(total, 1))
    due = set(s.rho.update_steps(total)) if total else set()
    steps = 0

    def on_step() -> None:
        nonlocal steps
        steps += 1
        if steps in due:
            state.update()

    losses = run.train(
        name,
        s.train,
        penalty=state.autograd_penalty,
        after_backward=state.add_gradient,
        on_step=on_step,
    )
    distance = {n: {"distance": d} for n, d in state.distance().items()}
    run.record(name, start, losses, state.history, distance)


def _step_keep(lp: LayerPlan, step: int, steps: int) -> LayerPlan:
    """The keep ratio of progressive step ``step`` of ``steps``: keep ** (step / steps)."""
    return LayerPlan(keep=lp.keep ** (step / steps), structured=lp.structured)


def _prune(run: _Run, constraints: Mapping[str, Constraint], tag: str) -> None:
    """ADMM pruning (if configured), hard prune to the masks, masked retraining (if configured)."""
    if run.s.admm_prune is not None:
        _admm(run, f"admm_prune{tag}", constraints, run.s.admm_prune)
    start = run.clock()
    with torch.no_grad():
        masks = {}
        for name, c in constraints.items():
            mask = c.mask(run.layers[name].weight.detach())
            previous = mask_of(run.layers[name])
            masks[name] = mask if previous is None else mask & previous
    prune_(run.layers, masks)
    run.project_and_measure()
    losses = [] if run.s.retrain is None else run.train(f"retrain{tag}", run.s.retrain)
    run.record(f"retrain{tag}", start, losses)


def _quantize(run: _Run) -> None:
    """ADMM quantization (if configured), then iterative hard quantization with retraining."""
    masks = {n: mask_of(m) for n, m in run.layers.items()}
    constraints = run.plan.quant_constraints(masks)
    if not constraints:
        return
    # ADMM and the hard quantization share levels fitted once to the pruned, retrained weights.
    with part("codebook", sync=True):
        fixed = {n: c.fixed(run.layers[n].weight.detach()) for n, c in constraints.items()}
    if run.s.admm_quantize is not None:
        _admm(run, "admm_quantize", fixed, run.s.admm_quantize)
    run.projected = _accuracy_on_levels(run, fixed)
    start = run.clock()
    quantized = {}
    for name, c in fixed.items():
        module = run.layers[name]
        with part("codebook", sync=True):
            book = c.fit(module.weight.detach())
        learn = "centroids" if run.plan.layers[name].clusters is not None else "scale"
        quantized[name] = quantize_(module, book.levels, learn, book.grid)
    s = run.s.quant_retrain or QuantRetrainSettings(train=TrainSettings(epochs=0), shares=(1.0,))
    losses: list[float] = []
    for round_, share in enumerate(s.shares):
        for name, q in quantized.items():
            _freeze_share(q, run.layers[name], share)
        losses += run.train("quant_retrain", s.train, round_=round_)
    run.record("quant_retrain", start, losses)


def _accuracy_on_levels(run: _Run, fixed: Mapping[str, Constraint]) -> float:
    """Validation accuracy with every quantized layer's weights rounded to its levels at once
    (the hard projection that iterative quantization reaches in its last round), on a copy."""
    model = copy.deepcopy(run.model)
    layers = compressible_layers(model, list(run.layers))
    with torch.no_grad():
        for name, c in fixed.items():
            module = layers[name]
            target = (
                module.parametrizations.weight.original
                if parametrize.is_parametrized(module, "weight")
                else module.weight
            )
            target.copy_(c.project(module.weight.detach()))
    return evaluate(model, run.data.x_val, run.data.y_val)


def _freeze_share(q: Quantized, module: nn.Module, share: float) -> None:
    """Freeze the largest-magnitude free weights until ``share`` of the survivors sit on levels."""
    with torch.no_grad():
        free_w = module.parametrizations.weight.original.detach()
        target = math.ceil(share * int(q.mask.sum()))
        todo = target - int(q.frozen.sum())
        if todo <= 0:
            return
        free = q.mask & ~q.frozen
        score = torch.where(free, free_w.abs(), torch.full_like(free_w, -1.0)).reshape(-1)
        chosen = torch.zeros_like(free).reshape(-1)
        chosen[torch.topk(score, todo, sorted=False).indices] = True
        codes = nearest_codes(free_w, q.levels().detach().to(free_w.dtype))
        q.freeze_(chosen.view_as(free) & free, codes)


@dataclass(frozen=True)
class PrunedState:
    """The model after the pruning stages: its stages, masks and (masked) weights, on the CPU.

    Trials with the same pruning settings but different quantization can start from it.
    """

    stages: tuple[StageResult, ...]
    masks: Mapping[str, torch.Tensor]
    weights: Mapping[str, torch.Tensor]


def _snapshot(run: _Run) -> PrunedState:
    masks = {
        n: m.detach().cpu().clone()
        for n, mod in run.layers.items()
        if (m := mask_of(mod)) is not None
    }
    weights = {
        k: v.detach().cpu().clone()
        for k, v in run.model.state_dict().items()
        if ".parametrizations." not in k
    }
    with torch.no_grad():  # effective (masked) weights under their plain names
        for name in masks:
            weights[f"{name}.weight"] = run.layers[name].weight.detach().cpu().clone()
    return PrunedState(tuple(run.stages), masks, weights)


def _restore(run: _Run, state: PrunedState) -> None:
    run.model.load_state_dict(state.weights)
    prune_(run.layers, {n: m.to(run.layers[n].weight.device) for n, m in state.masks.items()})
    run.stages = list(state.stages)


def run_pipeline(
    model: nn.Module,
    data: DataSplits,
    plan: Plan,
    settings: PipelineSettings,
    *,
    layer_patterns: list[str] | None = None,
    device: str | torch.device = "cpu",
    hooks: PipelineHooks | None = None,
    pruned: PrunedState | None = None,
    on_pruned: Callable[[PrunedState], None] | None = None,
    dense_accuracy: tuple[float, float] | None = None,
) -> PipelineResult:
    """Compress ``model`` in place to ``plan``; returns every stage's figures and the storage.

    Seconds outside the training steps are counted in the active
    :class:`~admmsearch.timing.Timings` (a fresh one when none is active); each stage's
    ``seconds`` are its training steps alone.

    The layers compressed are those ``layer_patterns`` select (see
    :func:`admmsearch.models.compressible_layers`; None: every convolution and linear layer)
    plus any other module with a weight that ``plan`` names. With ``pruned`` (a state saved by
    ``on_pruned`` from a run with the same model, data, pruning plan and pruning stages) the
    dense and pruning stages are skipped. After the dense stage, Conv -> BatchNorm pairs are
    folded (``settings.fold_batchnorm``; see :mod:`admmsearch.fold`), so the compressed network
    is the deployed one. The model ends finalized: plain weight tensors with exact zeros and
    exact levels. ``dense_accuracy`` (validation, test) of the model as given spares
    evaluating it again when there is no ``pretrain`` stage; test accuracy is otherwise
    measured once, after the last stage.

    Raises:
        LayerError: a pattern, or a layer the plan names, is not a module with a weight.
        ConstraintError: a planned keep ratio keeps no weight of its layer.
    """
    model.to(device)
    data = data.to(device)
    layers = check_plan(model, plan, layer_patterns)
    timings = active()
    with nullcontext(timings) if timings else Timings(str(device)).activate():
        run = _Run(model, data, plan, settings, layers, hooks or PipelineHooks())
        run.dense_accuracy = dense_accuracy
        if pruned is not None:
            run.fold()  # the saved state is of the folded network
            _restore(run, pruned)
        else:
            _dense_and_prune(run)
            if on_pruned is not None:
                on_pruned(_snapshot(run))
        _quantize(run)
        finalize(model)
        run.test_final()
        with part("accounting"):
            storage = model_storage(model, list(layers), settings.index_format)
    return PipelineResult(
        tuple(run.stages),
        storage,
        plan,
        uncompressed=uncompressed_layers(model, layers),
        folding=run.folding,
    )


def check_plan(
    model: nn.Module, plan: Plan, layer_patterns: list[str] | None = None
) -> dict[str, nn.Module]:
    """The layers :func:`run_pipeline` compresses (those ``layer_patterns`` select, plus any
    other module with a weight that ``plan`` names), once ``plan`` is checked against their
    shapes: every planned layer exists and keeps a weight, or an output channel where it is
    pruned structured. Cheap: call it before training to refuse a plan at once.

    Raises:
        LayerError: a pattern, or a layer the plan names, is not a module with a weight.
        ConstraintError: a keep keeps nothing of its layer; names ``layers.<name>.keep``.
    """
    layers = compressible_layers(model, layer_patterns)
    others = uncompressed_layers(model, layers)
    named = [n for n in plan.layers if n in others]
    if named:
        layers = compressible_layers(model, [*layers, *named])
    numel = {n: m.weight.numel() for n, m in layers.items()}
    plan.check_layers(layers, numel, {n: _channel_count(m) for n, m in layers.items()})
    return layers


def _channel_count(module: nn.Module) -> int:
    axis, groups = output_channels(module)
    return module.weight.shape[axis] * (groups if axis == 1 else 1)


def _dense_and_prune(run: _Run) -> None:
    start = run.clock()
    s = run.s
    losses = [] if s.pretrain is None else run.train("dense", s.pretrain)
    run.record("dense", start, losses)
    run.fold()
    pruned = {n: lp for n, lp in run.plan.layers.items() if lp.prunes}
    steps = s.progressive_steps
    for step in range(1, steps + 1) if pruned else ():
        constraints = {
            n: _step_keep(lp, step, steps).sparsity(*output_channels(run.layers[n]))
            for n, lp in pruned.items()
        }
        _prune(run, constraints, "" if steps == 1 else f"_step{step}")
