"""Which recorded operation a traced call is: modules, functions and tensor methods by name.

Each ``map_*`` function takes one ``torch.fx`` node and the shapes of its tensor inputs and
output (batch axis included) and returns a :class:`Mapped`: a recorded operation of
:data:`~admmsearch.graph.OPS` with its data inputs, attributes and tensor keys, ``"alias"``
(the output is the input: dropout, identity), or ``"unsupported"`` with a reason when the call
is known but used in a way the runtimes do not compute (``ceil_mode=True``, a constant added).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

__all__ = ["Mapped", "map_function", "map_method", "map_module"]

Shapes = Mapping[Any, tuple[int, ...] | None]


@dataclass(frozen=True)
class Mapped:
    """A traced call as a recorded operation (see the module's docstring)."""

    op: str
    inputs: tuple[Any, ...] = ()
    ints: tuple[int, ...] = ()
    floats: tuple[float, ...] = ()
    keys: tuple[str, ...] = ()
    why: str = ""

    @classmethod
    def unsupported(cls, why: str = "") -> Mapped:
        return cls("unsupported", why=why)


def map_module(module: nn.Module, path: str, node: fx.Node, shapes: Shapes) -> Mapped:
    """A call of a leaf module (``torch.nn``'s own layers)."""
    x = node.args[0] if node.args else None
    if not isinstance(x, fx.Node):
        return Mapped.unsupported("its input is not a tensor argument")
    kind = type(module)
    if kind in _MODULE_UNARY:
        return Mapped(_MODULE_UNARY[kind], (x,))
    handler = _MODULES.get(kind)
    return handler(module, path, x, shapes[node]) if handler else Mapped.unsupported()


def map_function(target: object, node: fx.Node, shapes: Shapes) -> Mapped:
    """A call of a function (``F.relu``, ``torch.cat``, ``operator.add``, ...)."""
    try:
        handler = _FUNCTIONS.get(target)  # type: ignore[call-overload]
    except TypeError:  # an unhashable target
        handler = None
    return handler(node, shapes) if handler else Mapped.unsupported()


def map_method(name: str, node: fx.Node, shapes: Shapes) -> Mapped:
    """A call of a tensor method (``x.relu()``, ``x.view(n, -1)``, ``x.mean((2, 3))``)."""
    handler = _METHODS.get(name)
    return handler(node, shapes) if handler else Mapped.unsupported()


# --- modules ---


def _keys(path: str, module: nn.Module, *names: str) -> tuple[str, ...]:
    prefix = f"{path}." if path else ""
    return tuple(prefix + n for n in names if getattr(module, n, None) is not None)


def _conv(module: nn.Module, path: str, x: fx.Node, out: tuple[int, ...]) -> Mapped:
    if module.padding_mode != "zeros":
        return Mapped.unsupported(f"padding_mode={module.padding_mode!r}")
    ints = _conv_ints(
        module.kernel_size, module.stride, module.padding, module.dilation, module.groups
    )
    return Mapped("conv", (x,), ints, keys=_keys(path, module, "weight", "bias"))


def _conv_ints(
    kernel: Sequence[int], stride: object, padding: object, dilation: object, groups: int
) -> tuple[int, ...]:
    """stride, dilation, padding before and after (each per axis), groups."""
    axes = len(kernel)
    stride, dilation = _per_axis(stride, axes), _per_axis(dilation, axes)
    if isinstance(padding, str):
        same = padding == "same"
        total = [d * (k - 1) if same else 0 for d, k in zip(dilation, kernel, strict=True)]
        before, after = [t // 2 for t in total], [t - t // 2 for t in total]
    else:
        before = after = list(_per_axis(padding, axes))
    return (*stride, *dilation, *before, *after, int(groups))


def _linear(module: nn.Module, path: str, x: fx.Node, out: tuple[int, ...]) -> Mapped:
    return Mapped("linear", (x,), keys=_keys(path, module, "weight", "bias"))


def _batch_norm(module: nn.Module, path: str, x: fx.Node, out: tuple[int, ...]) -> Mapped:
    if module.running_mean is None or module.running_var is None:
        return Mapped.unsupported("no running statistics")
    keys = _keys(path, module, "running_mean", "running_var", "weight", "bias")
    return Mapped("batch_norm", (x,), floats=(float(module.eps),), keys=keys)


def _module_max_pool(module: nn.Module, path: str, x: fx.Node, out: tuple[int, ...]) -> Mapped:
    args = {k: getattr(module, k) for k in _MAX_POOL_ARGS[1:]}
    return _max_pool(x, len(out) - 2, args)


def _module_avg_pool(module: nn.Module, path: str, x: fx.Node, out: tuple[int, ...]) -> Mapped:
    args = {k: getattr(module, k) for k in _AVG_POOL_ARGS[1:]}
    return _avg_pool(x, len(out) - 2, args)


def _module_adaptive(module: nn.Module, path: str, x: fx.Node, out: tuple[int, ...]) -> Mapped:
    return _adaptive(x, x.meta["tensor_meta"].shape, out)


def _module_hardtanh(module: nn.Module, path: str, x: fx.Node, out: tuple[int, ...]) -> Mapped:
    return _hardtanh(x, module.min_val, module.max_val)


def _same(op: str) -> Callable[..., Mapped]:
    return lambda module, path, x, out: Mapped(op, (x,))


_MODULE_UNARY = {
    nn.ReLU: "relu",
    nn.ReLU6: "relu6",
    nn.Sigmoid: "sigmoid",
    nn.Tanh: "tanh",
    nn.Hardswish: "hardswish",
}
_MODULES: dict[type, Callable[..., Mapped]] = {
    nn.Conv1d: _conv,
    nn.Conv2d: _conv,
    nn.Linear: _linear,
    nn.BatchNorm1d: _batch_norm,
    nn.BatchNorm2d: _batch_norm,
    nn.MaxPool1d: _module_max_pool,
    nn.MaxPool2d: _module_max_pool,
    nn.AvgPool1d: _module_avg_pool,
    nn.AvgPool2d: _module_avg_pool,
    nn.AdaptiveAvgPool1d: _module_adaptive,
    nn.AdaptiveAvgPool2d: _module_adaptive,
    nn.Hardtanh: _module_hardtanh,
    nn.Flatten: _same("reshape"),
    nn.Unflatten: _same("reshape"),
    **dict.fromkeys(
        (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout), _same("alias")
    ),
}

# --- shared by modules and functions ---

_MAX_POOL_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode")
_AVG_POOL_ARGS = ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad")


def _per_axis(value: object, axes: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * axes
    return tuple(int(v) for v in value)  # type: ignore[attr-defined]


def _window(args: Mapping[str, Any], axes: int) -> tuple[int, ...]:
    kernel = _per_axis(args["kernel_size"], axes)
    stride = _per_axis(args.get("stride") or kernel, axes)
    return (*kernel, *stride, *_per_axis(args.get("padding", 0), axes))


def _max_pool(x: fx.Node, axes: int, args: Mapping[str, Any]) -> Mapped:
    if args.get("ceil_mode") or args.get("return_indices"):
        return Mapped.unsupported("ceil_mode or return_indices")
    if set(_per_axis(args.get("dilation", 1), axes)) != {1}:
        return Mapped.unsupported("dilation")
    return Mapped("max_pool", (x,), _window(args, axes))


def _avg_pool(x: fx.Node, axes: int, args: Mapping[str, Any]) -> Mapped:
    if args.get("ceil_mode") or args.get("divisor_override") is not None:
        return Mapped.unsupported("ceil_mode or divisor_override")
    count = int(bool(args.get("count_include_pad", True)))
    return Mapped("avg_pool", (x,), (*_window(args, axes), count))


def _adaptive(x: fx.Node, given: Sequence[int], out: Sequence[int]) -> Mapped:
    if tuple(out) == tuple(given):
        return Mapped("alias", (x,))
    if all(size == 1 for size in out[2:]):
        return Mapped("global_avg_pool", (x,))
    return Mapped.unsupported(f"output size {list(out[2:])}")


def _hardtanh(x: fx.Node, low: float, high: float) -> Mapped:
    if (low, high) == (0.0, 6.0):
        return Mapped("relu6", (x,))
    return Mapped.unsupported(f"min {low}, max {high}")


# --- functions and methods ---


def _bind(node: fx.Node, names: Sequence[str]) -> dict[str, Any]:
    """The call's arguments by parameter name (positional ones named by ``names``)."""
    return {**dict(zip(names, node.args, strict=False)), **node.kwargs}


def _data(node: fx.Node) -> fx.Node | None:
    x = node.args[0] if node.args else node.kwargs.get("input")
    return x if isinstance(x, fx.Node) else None


def _unary(op: str) -> Callable[[fx.Node, Shapes], Mapped]:
    def mapped(node: fx.Node, shapes: Shapes) -> Mapped:
        x = _data(node)
        return Mapped(op, (x,)) if x is not None else Mapped.unsupported()

    return mapped


def _fn_hardtanh(node: fx.Node, shapes: Shapes) -> Mapped:
    args = _bind(node, ("input", "min_val", "max_val"))
    return _hardtanh(_data(node), args.get("min_val", -1.0), args.get("max_val", 1.0))


def _fn_pool(node: fx.Node, shapes: Shapes) -> Mapped:
    axes = len(shapes[node]) - 2
    if node.target in _MAX_POOLS:
        return _max_pool(_data(node), axes, _bind(node, _MAX_POOL_ARGS + ("return_indices",)))
    return _avg_pool(_data(node), axes, _bind(node, _AVG_POOL_ARGS + ("divisor_override",)))


def _fn_adaptive(node: fx.Node, shapes: Shapes) -> Mapped:
    x = _data(node)
    return _adaptive(x, shapes[x], shapes[node]) if x is not None else Mapped.unsupported()


def _fn_add(node: fx.Node, shapes: Shapes) -> Mapped:
    args = _bind(node, ("input", "other", "alpha"))
    a, b = args.get("input"), args.get("other")
    if args.get("alpha", 1) != 1 or not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
        return Mapped.unsupported("alpha or a constant operand")
    if not shapes[a] == shapes[b] == shapes[node]:
        return Mapped.unsupported("broadcasting")
    return Mapped("add", (a, b))


def _fn_cat(node: fx.Node, shapes: Shapes) -> Mapped:
    args = _bind(node, ("tensors", "dim"))
    parts, dim, rank = args.get("tensors"), args.get("dim", 0), len(shapes[node])
    if not isinstance(parts, list | tuple) or not all(isinstance(p, fx.Node) for p in parts):
        return Mapped.unsupported("its inputs are not all tensors of the graph")
    if dim % rank != 1:
        return Mapped.unsupported(f"along axis {dim}, not the channels")
    return Mapped("concat", tuple(parts))


def _fn_mean(node: fx.Node, shapes: Shapes) -> Mapped:
    args, x = _bind(node, ("input", "dim", "keepdim")), _data(node)
    rank = len(shapes[x]) if x is not None else 0
    dims = args.get("dim")
    dims = {dims} if isinstance(dims, int) else set(dims or ())
    if rank < 3 or {d % rank for d in dims} != set(range(2, rank)) or args.get("dtype"):
        return Mapped.unsupported("a mean over other axes than all the spatial ones")
    return Mapped("global_avg_pool", (x,))


def _parameters(*tensors: object) -> tuple[str, ...] | None:
    """The state_dict keys of tensors read from the module (``self.weight``), None if one is
    computed; an absent (None) tensor is skipped."""
    if not all(t is None or isinstance(t, fx.Node) and t.op == "get_attr" for t in tensors):
        return None
    return tuple(str(t.target) for t in tensors if t is not None)


def _fn_linear(node: fx.Node, shapes: Shapes) -> Mapped:
    args = _bind(node, ("input", "weight", "bias"))
    keys = _parameters(args.get("weight"), args.get("bias"))
    if keys is None:
        return Mapped.unsupported("a weight that is not a parameter")
    return Mapped("linear", (_data(node),), keys=keys)


def _fn_conv(node: fx.Node, shapes: Shapes) -> Mapped:
    args = _bind(node, ("input", "weight", "bias", "stride", "padding", "dilation", "groups"))
    weight = args.get("weight")
    keys = _parameters(weight, args.get("bias"))
    if not keys or shapes.get(weight) is None:
        return Mapped.unsupported("a weight that is not a parameter")
    ints = _conv_ints(
        shapes[weight][2:],
        args.get("stride", 1),
        args.get("padding", 0),
        args.get("dilation", 1),
        args.get("groups", 1),
    )
    return Mapped("conv", (_data(node),), ints, keys=keys)


_MAX_POOLS = (F.max_pool1d, F.max_pool2d)
_FUNCTIONS: dict[object, Callable[[fx.Node, Shapes], Mapped]] = {
    F.linear: _fn_linear,
    **dict.fromkeys((F.conv1d, F.conv2d), _fn_conv),
    **dict.fromkeys((F.relu, torch.relu, torch.relu_, F.relu_), _unary("relu")),
    F.relu6: _unary("relu6"),
    **dict.fromkeys((torch.sigmoid, F.sigmoid), _unary("sigmoid")),
    **dict.fromkeys((torch.tanh, F.tanh), _unary("tanh")),
    F.hardswish: _unary("hardswish"),
    F.hardtanh: _fn_hardtanh,
    **dict.fromkeys((*_MAX_POOLS, F.avg_pool1d, F.avg_pool2d), _fn_pool),
    **dict.fromkeys((F.adaptive_avg_pool1d, F.adaptive_avg_pool2d), _fn_adaptive),
    **dict.fromkeys(
        (torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze), _unary("reshape")
    ),
    **dict.fromkeys((operator.add, operator.iadd, torch.add), _fn_add),
    **dict.fromkeys((torch.cat, torch.concat, torch.concatenate), _fn_cat),
    **dict.fromkeys((F.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout), _unary("alias")),
    torch.mean: _fn_mean,
}
_METHODS: dict[str, Callable[[fx.Node, Shapes], Mapped]] = {
    **dict.fromkeys(("relu", "relu_"), _unary("relu")),
    **dict.fromkeys(("sigmoid", "sigmoid_"), _unary("sigmoid")),
    **dict.fromkeys(("tanh", "tanh_"), _unary("tanh")),
    **dict.fromkeys(("flatten", "view", "reshape", "squeeze", "unsqueeze"), _unary("reshape")),
    "contiguous": _unary("alias"),
    **dict.fromkeys(("add", "add_"), _fn_add),
    "mean": _fn_mean,
}
