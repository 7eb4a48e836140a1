"""The compression pipeline, as plain functions called in order, each returning a frozen result.

    dense stage -> BatchNorm folding -> prune phase (ADMM pruning, hard prune + masked
    retraining) -> pruned state -> quantize phase (ADMM quantization of the survivors,
    iterative hard quantization + retraining, finalize, storage accounting) -> result

Every function takes a :class:`Network` (the model, trained in place as in any plain training
loop, its compressed layers, the data, the user's training recipe, the progress hooks and the
seed) and returns what it did: a :class:`StageResult` per stage, a :class:`PrunedState` after
the prune phase (a value: a caller may keep it, and later start a quantize phase, or more
retraining, from it) and a :class:`PipelineResult` at the end. :func:`run_pipeline` calls them in
order. Each stage is optional. Without the ADMM pruning stage the hard prune is one-shot
magnitude pruning, the classic baseline. With ``progressive_steps > 1`` the pruning target is
reached in steps whose keep ratios fall geometrically, each step starting from the last one's
pruned model (Ye et al. 2019). The settings types live in :mod:`admmsearch.settings`.

Each training stage draws from a generator seeded with ``seed * 1000 + its index`` among the
stages (plus ``7919 * round`` for the rounds of quantized retraining), so a stage trains the same
whether the stages before it ran now or came from a kept :class:`PrunedState`.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace

import torch
from torch import nn
from torch.nn.utils import parametrize

from .admm import AdmmState, Residuals
from .constraints import Constraint, nearest_codes
from .data import DataSplits
from .errors import DivergenceError
from .fold import Folding, fold_model
from .hooks import Recipe, load_recipe
from .masking import Quantized, finalize, mask_of, prune_, quantize_
from .models import compressible_layers, output_channels, uncompressed_layers
from .packed import StorageReport, model_storage
from .plan import LayerPlan, Plan
from .settings import AdmmSettings, PipelineSettings, QuantRetrainSettings, TrainSettings
from .timing import Timings, active, part
from .train import StepHooks, evaluate, fit, fit_best

__all__ = [
    "Network",
    "PipelineHooks",
    "PipelineResult",
    "PrunedState",
    "StageResult",
    "admm_stage",
    "check_plan",
    "dense_stage",
    "extend_retraining",
    "fold_stage",
    "hard_prune_stage",
    "layer_figures",
    "network",
    "prune_phase",
    "quantize_phase",
    "restore",
    "run_pipeline",
    "snapshot",
    "stage_steps",
    "timed",
]

_ROUND_SEED = 7919  # seed offset between the rounds of quantized retraining


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
    """Optional callbacks: progress per epoch (stage, 0-based epoch, mean loss; a round of
    quantized retraining is named with the share it freezes, ``quant_retrain 50%``), and a
    check after every stage (it may raise to stop the pipeline)."""

    on_epoch: Callable[[str, int, float], None] | None = None
    on_stage: Callable[[StageResult], None] | None = None


@dataclass(frozen=True)
class Network:
    """What every stage works on: ``model`` (trained in place), its compressed ``layers``
    (name -> module), the data on the model's device, the user's training ``recipe``, the
    progress ``hooks`` and the pipeline's ``seed``."""

    model: nn.Module
    layers: Mapping[str, nn.Module]
    data: DataSplits
    recipe: Recipe
    hooks: PipelineHooks
    seed: int


@dataclass(frozen=True)
class PrunedState:
    """The model after the prune phase: its stages, masks and (masked) weights, on the CPU.

    A quantize phase, or more masked retraining, can start from it: trials with the same
    pruning settings but different quantization share one (the study's stage cache), and a
    trial promoted to a longer rung continues from its own.
    """

    stages: tuple[StageResult, ...]
    masks: Mapping[str, torch.Tensor]
    weights: Mapping[str, torch.Tensor]


def network(
    model: nn.Module,
    data: DataSplits,
    plan: Plan,
    settings: PipelineSettings,
    *,
    layer_patterns: list[str] | None = None,
    device: str | torch.device = "cpu",
    hooks: PipelineHooks | None = None,
) -> Network:
    """Put ``model`` and ``data`` on ``device`` and select the layers to compress: those
    ``layer_patterns`` select (see :func:`admmsearch.models.compressible_layers`; None: every
    convolution and linear layer) plus any other module with a weight that ``plan`` names.

    Raises:
        LayerError: a pattern, or a layer the plan names, is not a module with a weight.
        ConstraintError: a planned keep ratio keeps no weight of its layer.
    """
    model.to(device)
    layers = check_plan(model, plan, layer_patterns)
    recipe = load_recipe(settings.training)
    return Network(model, layers, data.to(device), recipe, hooks or PipelineHooks(), settings.seed)


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


def stage_steps(data: DataSplits, s: TrainSettings) -> int:
    """Optimizer steps of a stage: its epochs times the batches of the training split."""
    return s.epochs * math.ceil(len(data.y_train) / s.batch_size)


# -- one stage's bookkeeping: its clock, its training, its result --------------------------


def _clock() -> tuple[float, float]:
    """Where a stage starts: wall time, and the seconds spent outside training so far."""
    timings = active()
    return time.perf_counter(), sum(timings.seconds.values()) if timings else 0.0


def _training_seconds(start: tuple[float, float]) -> float:
    """Seconds since ``start`` less those spent outside training (see admmsearch.timing)."""
    wall, outside = start
    return time.perf_counter() - wall - (_clock()[1] - outside)


@dataclass(frozen=True)
class _Trained:
    """What a stage's training gave: the mean loss of each epoch, and for a training that
    keeps its best epoch that epoch (1-based) and its validation accuracy."""

    losses: tuple[float, ...] = ()
    kept_epoch: int | None = None
    kept_accuracy: float | None = None


def _train(
    net: Network,
    name: str,
    seed: int,
    s: TrainSettings,
    hooks: StepHooks | None = None,
    label: str | None = None,
) -> _Trained:
    """Train one stage (its best epoch kept where ``s.keep_best`` and no penalty is added);
    the progress hook names it ``label`` (default: ``name``)."""
    hooks = hooks or StepHooks()
    progress, label = net.hooks.on_epoch, label or name
    on_epoch = None if progress is None else (lambda e, loss: progress(label, e, loss))
    try:
        if s.keep_best and hooks.penalty is None and hooks.after_backward is None:
            losses, kept, accuracy = fit_best(
                net.model, net.data, s, seed=seed, on_epoch=on_epoch, recipe=net.recipe, stage=name
            )
            return _Trained(tuple(losses), kept, accuracy)
        hooks = replace(hooks, on_epoch=on_epoch)
        losses = fit(net.model, net.data, s, seed=seed, hooks=hooks, recipe=net.recipe, stage=name)
        return _Trained(tuple(losses))
    except DivergenceError as exc:
        raise DivergenceError(f"stage {name}: {exc}") from exc


def _seed(net: Network, index: int, round_: int = 0) -> int:
    return net.seed * 1000 + index + _ROUND_SEED * round_


def _val_accuracy(net: Network) -> float:
    return evaluate(net.model, net.data.x_val, net.data.y_val)


def _test_accuracy(net: Network) -> float:
    return evaluate(net.model, net.data.x_test, net.data.y_test)


def _result(
    net: Network,
    name: str,
    start: tuple[float, float],
    trained: _Trained,
    *,
    known: tuple[float | None, float | None] = (None, None),
    projected: float | None = None,
    residuals: tuple[Residuals, ...] | list[Residuals] = (),
    extra: Mapping[str, Mapping[str, float]] | None = None,
) -> StageResult:
    """The stage's result, passed to the ``on_stage`` hook: its validation accuracy is
    ``known[0]``, else the kept epoch's, else measured now; ``known[1]`` its test accuracy."""
    seconds = _training_seconds(start)
    layers = layer_figures(net.layers)
    for layer, values in (extra or {}).items():
        layers[layer].update(values)
    val = known[0] if known[0] is not None else trained.kept_accuracy
    result = StageResult(
        name=name,
        val_accuracy=_val_accuracy(net) if val is None else val,
        test_accuracy=known[1],
        seconds=seconds,
        layers=layers,
        losses=trained.losses,
        residuals=tuple(residuals),
        projected_val_accuracy=projected,
        kept_epoch=trained.kept_epoch,
    )
    if net.hooks.on_stage is not None:
        net.hooks.on_stage(result)
    return result


# -- the stages ---------------------------------------------------------------------------


def dense_stage(
    net: Network, s: PipelineSettings, known: tuple[float, float] | None = None
) -> StageResult:
    """The dense reference: ``s.pretrain`` epochs if set; its validation and test accuracy
    (``known``, validation and test, spares measuring them when nothing is trained)."""
    start = _clock()
    trained = _Trained() if s.pretrain is None else _train(net, "dense", _seed(net, 0), s.pretrain)
    if known is None or s.pretrain is not None:
        known = (_val_accuracy(net), _test_accuracy(net))
    return _result(net, "dense", start, trained, known=known)


def fold_stage(net: Network, s: PipelineSettings) -> Folding:
    """After the dense stage, before anything is pruned or quantized: weight
    reparametrizations (weight or spectral norm) become plain weights (they would clash with
    the masks, and the effective weight is what is stored), then BatchNorm folds into the
    convolutions (:mod:`admmsearch.fold`) if ``s`` asks for it."""
    return fold_model(net.model, s.fold_batchnorm)


def admm_stage(
    net: Network, name: str, index: int, constraints: Mapping[str, Constraint], s: AdmmSettings
) -> StageResult:
    """One ADMM stage over ``constraints`` (Zhang et al. 2018, eqs. 6-8): SGD on the loss plus
    rho/2 ||W - Z + U||^2, with Z and U updated ``s.rho.updates`` times spread evenly over the
    stage's optimizer steps (the last after the last step). The weights end near, not on,
    their sets."""
    start = _clock()
    total = stage_steps(net.data, s.train)
    state = AdmmState(net.layers, constraints, s.rho, max(total, 1))
    due = set(s.rho.update_steps(total)) if total else set()
    steps = itertools.count(1)

    def on_step() -> None:
        if next(steps) in due:
            state.update()

    hooks = StepHooks(state.autograd_penalty, state.add_gradient, on_step)
    trained = _train(net, name, _seed(net, index), s.train, hooks)
    distance = {n: {"distance": d} for n, d in state.distance().items()}
    return _result(net, name, start, trained, residuals=state.history, extra=distance)


def hard_prune_stage(
    net: Network,
    name: str,
    index: int,
    constraints: Mapping[str, Constraint],
    s: TrainSettings | None,
) -> StageResult:
    """Hard prune to the constraints' masks (within any mask already there), note the
    validation accuracy right after, then masked retraining (``s``; None: none)."""
    start = _clock()
    with torch.no_grad():
        masks = {}
        for name_, c in constraints.items():
            mask, previous = c.mask(net.layers[name_].weight.detach()), mask_of(net.layers[name_])
            masks[name_] = mask if previous is None else mask & previous
    prune_(net.layers, masks)
    projected = _val_accuracy(net)
    trained = _Trained() if s is None else _train(net, name, _seed(net, index), s)
    return _result(net, name, start, trained, projected=projected)


# -- the phases ---------------------------------------------------------------------------


def _step_keep(lp: LayerPlan, step: int, steps: int) -> LayerPlan:
    """The keep ratio of progressive step ``step`` of ``steps``: keep ** (step / steps)."""
    return LayerPlan(keep=lp.keep ** (step / steps), structured=lp.structured)


def prune_phase(net: Network, plan: Plan, s: PipelineSettings, dense: StageResult) -> PrunedState:
    """From the dense (and folded) model: for each progressive step, ADMM pruning (if
    configured), hard prune and masked retraining (if configured); returns the pruned state."""
    stages = [dense]
    pruned = {n: lp for n, lp in plan.layers.items() if lp.prunes}
    steps = s.progressive_steps
    for step in range(1, steps + 1) if pruned else ():
        constraints = {
            n: _step_keep(lp, step, steps).sparsity(*output_channels(net.layers[n]))
            for n, lp in pruned.items()
        }
        tag = "" if steps == 1 else f"_step{step}"
        if s.admm_prune is not None:
            stage = admm_stage(net, f"admm_prune{tag}", len(stages), constraints, s.admm_prune)
            stages.append(stage)
        stages.append(hard_prune_stage(net, f"retrain{tag}", len(stages), constraints, s.retrain))
    return snapshot(net, stages)


def snapshot(net: Network, stages: list[StageResult]) -> PrunedState:
    """The model's masks and effective weights now, copied to the CPU, with ``stages``."""
    masks = {
        n: m.detach().cpu().clone()
        for n, mod in net.layers.items()
        if (m := mask_of(mod)) is not None
    }
    weights = {
        k: v.detach().cpu().clone()
        for k, v in net.model.state_dict().items()
        if ".parametrizations." not in k
    }
    with torch.no_grad():  # effective (masked) weights under their plain names
        for name in masks:
            weights[f"{name}.weight"] = net.layers[name].weight.detach().cpu().clone()
    return PrunedState(tuple(stages), masks, weights)


def extend_retraining(
    net: Network, pruned: PrunedState, s: TrainSettings, name: str
) -> PrunedState:
    """More masked retraining from a pruned state, on the same masks: ``s.epochs`` more
    epochs (a fresh optimizer and learning-rate schedule), as a stage of its own named
    ``name``; returns the new pruned state. A trial promoted to a longer rung continues its
    lower rung's model this way."""
    restore(net, pruned)
    stages = list(pruned.stages)
    start = _clock()
    trained = _train(net, name, _seed(net, len(stages)), s)
    stages.append(_result(net, name, start, trained))
    return snapshot(net, stages)


def restore(net: Network, state: PrunedState) -> None:
    """Put the (folded) model in ``state``: its effective weights, then its masks."""
    finalize(net.model)
    net.model.load_state_dict(state.weights)
    prune_(net.layers, {n: m.to(net.layers[n].weight.device) for n, m in state.masks.items()})


def quantize_phase(
    net: Network, plan: Plan, s: PipelineSettings, pruned: PrunedState, folding: Folding
) -> PipelineResult:
    """From a pruned state (restored into the folded model first): ADMM quantization (if
    configured) and iterative hard quantization with retraining of the layers ``plan``
    quantizes; then the weights are made permanent (exact zeros and levels), the result's
    test accuracy measured and its storage accounted."""
    restore(net, pruned)
    stages = list(pruned.stages)
    constraints = plan.quant_constraints({n: mask_of(m) for n, m in net.layers.items()})
    if constraints:
        with part("codebook", sync=True):  # levels fitted once, shared by both stages
            fixed = {n: c.fixed(net.layers[n].weight.detach()) for n, c in constraints.items()}
        if s.admm_quantize is not None:
            stages.append(admm_stage(net, "admm_quantize", len(stages), fixed, s.admm_quantize))
        stages.append(_quant_retrain_stage(net, plan, s, fixed, len(stages)))
    return _finish(net, plan, s, stages, folding)


def _quant_retrain_stage(
    net: Network,
    plan: Plan,
    s: PipelineSettings,
    fixed: Mapping[str, Constraint],
    index: int,
) -> StageResult:
    """Iterative hard quantization (Ye et al. 2018): in each round a larger share of every
    layer's survivors, largest magnitudes first, is frozen on its levels and the rest retrain
    (the codebook keeps learning: the scale, or every centroid). The progress hook names each
    round's epochs by that share (``quant_retrain 50%``); the stage is ``quant_retrain``."""
    projected = _accuracy_on_levels(net, fixed)
    start = _clock()
    quantized = {}
    for name, c in fixed.items():
        module = net.layers[name]
        with part("codebook", sync=True):
            book = c.fit(module.weight.detach())
        learn = "centroids" if plan.layers[name].clusters is not None else "scale"
        quantized[name] = quantize_(module, book.levels, learn, book.grid)
    q = s.quant_retrain or QuantRetrainSettings(train=TrainSettings(epochs=0), shares=(1.0,))
    trained = _Trained()
    for round_, share in enumerate(q.shares):
        for name, levels in quantized.items():
            _freeze_share(levels, net.layers[name], share)
        label = f"quant_retrain {share * 100:.3g}%"  # the share frozen on its levels
        step = _train(net, "quant_retrain", _seed(net, index, round_), q.train, label=label)
        trained = _Trained(trained.losses + step.losses, step.kept_epoch, step.kept_accuracy)
    return _result(net, "quant_retrain", start, trained, projected=projected)


def _accuracy_on_levels(net: Network, fixed: Mapping[str, Constraint]) -> float:
    """Validation accuracy with every quantized layer's weights rounded to its levels at once
    (the hard projection that iterative quantization reaches in its last round), on a copy."""
    model = copy.deepcopy(net.model)
    layers = compressible_layers(model, list(net.layers))
    with torch.no_grad():
        for name, c in fixed.items():
            module = layers[name]
            target = (
                module.parametrizations.weight.original
                if parametrize.is_parametrized(module, "weight")
                else module.weight
            )
            target.copy_(c.project(module.weight.detach()))
    return evaluate(model, net.data.x_val, net.data.y_val)


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


def _finish(
    net: Network, plan: Plan, s: PipelineSettings, stages: list[StageResult], folding: Folding
) -> PipelineResult:
    """Plain weights with exact zeros and levels; the last stage's test accuracy; storage."""
    finalize(net.model)
    if stages[-1].test_accuracy is None:
        stages[-1] = replace(stages[-1], test_accuracy=_test_accuracy(net))
    with part("accounting"):
        storage = model_storage(net.model, list(net.layers), s.index_format)
    return PipelineResult(
        tuple(stages),
        storage,
        plan,
        uncompressed=uncompressed_layers(net.model, net.layers),
        folding=folding,
    )


@contextmanager
def timed(device: str | torch.device) -> Iterator[Timings]:
    """The active :class:`~admmsearch.timing.Timings`, or fresh ones for the block: the
    stages count only their training steps in ``seconds``, and the rest goes there."""
    timings = active()
    with nullcontext(timings) if timings else Timings(str(device)).activate() as now:
        yield now


def run_pipeline(
    model: nn.Module,
    data: DataSplits,
    plan: Plan,
    settings: PipelineSettings,
    *,
    layer_patterns: list[str] | None = None,
    device: str | torch.device = "cpu",
    hooks: PipelineHooks | None = None,
    dense_accuracy: tuple[float, float] | None = None,
) -> PipelineResult:
    """Compress ``model`` in place to ``plan``: every stage in order (see the module's text).

    ``layer_patterns`` select the layers (see :func:`network`). After the dense stage, Conv ->
    BatchNorm pairs are folded (``settings.fold_batchnorm``; see :mod:`admmsearch.fold`), so the
    compressed network is the deployed one. The model ends finalized: plain weight tensors with
    exact zeros and exact levels. ``dense_accuracy`` (validation, test) of the model as given
    spares evaluating it again when there is no ``pretrain`` stage. Seconds outside the
    training steps are counted in the active :class:`~admmsearch.timing.Timings`.

    Raises:
        LayerError: a pattern, or a layer the plan names, is not a module with a weight.
        ConstraintError: a planned keep ratio keeps no weight of its layer.
    """
    net = network(
        model, data, plan, settings, layer_patterns=layer_patterns, device=device, hooks=hooks
    )
    with timed(device):
        dense = dense_stage(net, settings, dense_accuracy)
        folding = fold_stage(net, settings)
        pruned = prune_phase(net, plan, settings, dense)
        return quantize_phase(net, plan, settings, pruned, folding)


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
