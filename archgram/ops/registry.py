"""The op registry: one decorator is the only way an op enters archgram.

An op is an ``nn.Module`` class plus metadata (name, family, typed argument
schema, shape rule, catalog refs). Grammar terminals name ops; the sampler asks
their shape rules before choosing them; the compiler instantiates them.

Three kinds of op exist, by how many tensors they take and give:
  unary  1 -> 1   ``Op``       (linear, norm, im2col, attention, ...)
  split  1 -> n   ``SplitOp``  (clone, group) opens n branches
  merge  n -> 1   ``MergeOp``  (add, concat, matmul) closes them
"""
from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from archgram.errors import ArchgramError, ShapeError
from archgram.registry import Registry, did_you_mean
from archgram.shapes import Shape, channel_axis, numel, positions

REQUIRED: Any = type("Required", (), {"__repr__": lambda self: "REQUIRED"})()

#: Types an argument may declare; grammar values are checked against them.
ARG_TYPES = (int, float, str, bool, tuple)


@dataclass(frozen=True)
class Arg:
    """Schema of one op argument: its type, default and allowed values."""

    type: type
    default: Any = REQUIRED
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    doc: str = ""

    def check(self, value: Any) -> Any:
        """Return ``value`` coerced to this type, or raise TypeError saying why."""
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.type is tuple and isinstance(value, list):
            value = tuple(value)
        if isinstance(value, bool) and self.type is not bool:
            raise TypeError(f"expected {self.type.__name__}, got boolean {value!r}")
        if not isinstance(value, self.type):
            raise TypeError(f"expected {self.type.__name__}, got {type(value).__name__} {value!r}")
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(map(str, self.choices))
            raise TypeError(f"{value!r} is not one of: {allowed}")
        if self.low is not None and value < self.low:
            raise TypeError(f"{value!r} is below the minimum {self.low}")
        if self.high is not None and value > self.high:
            raise TypeError(f"{value!r} is above the maximum {self.high}")
        return value

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


class _OpModule(nn.Module):
    """What every op kind shares: its registry entry and its printed name."""

    #: Ops that read or write the routing context (im2col/col2im) set this.
    uses_context: ClassVar[bool] = False
    #: Filled in by ``register_op``.
    spec: ClassVar[OpSpec]

    def _get_name(self) -> str:
        # print(model) shows the grammar's op names (``posenc``, not the class name).
        spec = getattr(type(self), "spec", None)
        return spec.name if spec is not None else type(self).__name__


class Op(_OpModule):
    """A unary op (one tensor in, one out). Subclasses implement the shape rule."""

    kind: ClassVar[str] = "unary"

    @classmethod
    def output_shape(cls, shape: Shape, **args: Any) -> Shape:
        """Shape this op returns for ``shape``; raise ShapeError if it cannot."""
        raise NotImplementedError

    @classmethod
    def count_params(cls, shape: Shape, /, **args: Any) -> int | None:
        """Analytic parameter count, or None to measure a meta-device instance.
        Worth writing for common ops: the sampler asks it at every choice."""
        return None

    @classmethod
    def transfer(cls, shape: Shape, ctx: tuple, **args: Any) -> tuple[Shape, tuple]:
        """Shape rule with the routing context; context-free ops pass it through."""
        return cls.output_shape(shape, **args), ctx

    @classmethod
    def flops(cls, shape: Shape, out: Shape, params: int, /, **args: Any) -> int:
        """Forward FLOPs per batch. Default: a dense map per position, or elementwise."""
        if params:
            return 2 * params * shape[0] * positions(out)
        return numel(out)


class SplitOp(_OpModule):
    """1 -> n: opens ``branches(args)`` branches (clone, group)."""

    kind: ClassVar[str] = "split"

    @classmethod
    def count_params(cls, shape: Shape, /, **args: Any) -> int | None:
        return 0

    @classmethod
    def branches(cls, **args: Any) -> int:
        return int(args["n"])

    @classmethod
    def output_shapes(cls, shape: Shape, **args: Any) -> list[Shape]:
        raise NotImplementedError

    @classmethod
    def flops(cls, shape: Shape, outs: list[Shape], params: int, /, **args: Any) -> int:
        return 0


class MergeOp(_OpModule):
    """n -> 1: closes the branches of the nearest split (add, concat, matmul)."""

    kind: ClassVar[str] = "merge"
    #: Branch order does not matter (used by the canonical hash).
    commutative: ClassVar[bool] = False
    spec: ClassVar[OpSpec]

    @classmethod
    def count_params(cls, shapes: list[Shape], /, **args: Any) -> int | None:
        return 0

    @classmethod
    def output_shape(cls, shapes: list[Shape], **args: Any) -> Shape:
        raise NotImplementedError

    @classmethod
    def branch_target(cls, done: list[Shape], **args: Any) -> tuple | None:
        """Shape pattern (ints, None = any) the next branch must produce, given the
        branches already sampled; lets the sampler aim instead of retrying."""
        return None

    @classmethod
    def flops(cls, shapes: list[Shape], out: Shape, params: int, /, **args: Any) -> int:
        return numel(out) * max(len(shapes) - 1, 1)


@dataclass
class OpSpec:
    """Everything the grammar, sampler, compiler and CLI need to know of an op."""

    name: str
    cls: type
    family: str
    args: dict[str, Arg]
    refs: tuple[str, ...] = ()
    doc: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.cls.kind

    def bind(self, values: dict[str, Any]) -> dict[str, Any]:
        """Fill defaults and type-check; raise TypeError naming the argument."""
        unknown = set(values) - set(self.args)
        if unknown:
            name = sorted(unknown)[0]
            hint = did_you_mean(name, self.args)
            raise TypeError(f"op '{self.name}' has no argument '{name}'{hint}")
        bound = {}
        for name, arg in self.args.items():
            if name in values:
                try:
                    bound[name] = arg.check(values[name])
                except TypeError as exc:
                    raise TypeError(f"argument '{name}' of op '{self.name}': {exc}") from None
            elif arg.required:
                raise TypeError(f"op '{self.name}' needs argument '{name}' ({arg.type.__name__})")
            else:
                bound[name] = arg.default
        return bound

    def param_count(self, shape: Any, args: dict[str, Any], ctx: tuple = ()) -> int:
        """Exact parameter count: the op's formula, else measured on the meta device."""
        count = self.cls.count_params(shape, **args)
        if count is not None:
            return count
        return _param_count(self.name, _freeze(shape), _freeze(args), _freeze(ctx))

    def build(self, shape: Any, args: dict[str, Any], ctx: tuple = ()) -> nn.Module:
        """Instantiate the module for this input shape (list of shapes for merges)."""
        if self.cls.uses_context:
            return self.cls(shape, ctx=ctx, **args)
        return self.cls(shape, **args)


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw_args(frozen: tuple) -> dict[str, Any]:
    return {k: v for k, v in frozen}


@functools.lru_cache(maxsize=65536)
def _param_count(name: str, shape: Any, args: tuple, ctx: tuple) -> int:
    spec = get_op(name)
    with torch.device("meta"):
        module = spec.build(shape, _thaw_args(args), ctx)
    return sum(p.numel() for p in module.parameters())


#: Every grammar terminal by name; the first lookup imports archgram.ops, whose
#: modules register the built-in families.
OPS: Registry[OpSpec] = Registry("op", loader=lambda: importlib.import_module("archgram.ops"),
                                 same=lambda old, new: old.cls is new.cls, list_known=False)


def register_op(
    name: str,
    *,
    family: str,
    args: dict[str, Arg] | None = None,
    refs: tuple[str, ...] = (),
    **extra: Any,
):
    """Class decorator: register ``cls`` as grammar terminal ``name``."""

    def decorate(cls: type) -> type:
        if not issubclass(cls, (Op, SplitOp, MergeOp)):
            raise ArchgramError(f"op '{name}' must subclass Op, SplitOp or MergeOp")
        doc = (cls.__doc__ or "").strip().splitlines()
        spec = OpSpec(name, cls, family, dict(args or {}), tuple(refs), doc[0] if doc else "", extra)
        cls.spec = spec
        OPS.add(name, spec)
        return cls

    return decorate


def get_op(name: str) -> OpSpec:
    return OPS.get(name)


def has_op(name: str) -> bool:
    return name in OPS


def all_ops() -> list[OpSpec]:
    return sorted(OPS.values(), key=lambda s: (s.family, s.name))


def check_rank(name: str, shape: Shape, *ranks: int) -> None:
    """Raise ShapeError unless ``shape`` has one of ``ranks`` dimensions."""
    if len(shape) not in ranks:
        from archgram.shapes import MODES, fmt

        want = " or ".join(MODES.get(r, f"rank-{r}") for r in ranks)
        article = "an" if want[0] in "aeiou" else "a"
        raise ShapeError(f"{name} needs {article} {want} input, got {fmt(shape)}")


__all__ = [
    "Arg",
    "MergeOp",
    "Op",
    "OpSpec",
    "REQUIRED",
    "SplitOp",
    "all_ops",
    "channel_axis",
    "check_rank",
    "get_op",
    "has_op",
    "register_op",
]
