"""Derivation -> nn.Module.

Each node becomes a module named after what it is: ops by their op name,
rules by their symbol, branches as ``Branch`` holding the split op, one module
per arm and the merge op. ``print(model)`` therefore reads like the derivation.
Shapes come from the same inference the sampler used; a failure names the node.
"""
from __future__ import annotations

import torch
from torch import nn

from archgram.errors import ArchgramError, CompileError
from archgram.grammar.derivation import Derivation, Node, OpNode, RuleNode
from archgram.grammar.inference import bound_args, resolve_op
from archgram.ops.registry import get_op
from archgram.shapes import Shape


class Sequence(nn.Sequential):
    """The modules of one rule expansion, applied in order."""

    def __init__(self, symbol: str, modules: list[nn.Module]):
        super().__init__(*modules)
        self.symbol = symbol

    def extra_repr(self) -> str:
        return f"<{self.symbol}>"


class Branch(nn.Module):
    """split -> one module per arm -> merge."""

    def __init__(self, split: nn.Module, arms: list[nn.Module], merge: nn.Module):
        super().__init__()
        self.split = split
        self.arms = nn.ModuleList(arms)
        self.merge = merge

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = self.split(x)
        return self.merge([arm(part) for arm, part in zip(self.arms, parts, strict=True)])


class Network(nn.Module):
    """A compiled derivation: the body, plus an optional task head."""

    def __init__(self, body: nn.Module, derivation: Derivation, head: nn.Module | None = None):
        super().__init__()
        self.body = body
        self.head = head if head is not None else nn.Identity()
        self.input_shape = tuple(derivation.input_shape)
        self.output_shape = tuple(derivation.output_shape)
        self.arch_hash = derivation.hash()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _build(node: Node, ctx: tuple, trail: list[str]) -> tuple[nn.Module, tuple]:
    if isinstance(node, OpNode):
        spec = get_op(node.op)
        module = spec.build(node.in_shape, bound_args(node), ctx)
        if spec.cls.uses_context:
            _, ctx = spec.cls.transfer(node.in_shape, ctx, **bound_args(node))
        return module, ctx
    if isinstance(node, RuleNode):
        modules = []
        for i, child in enumerate(node.children):
            module, ctx = _build(child, ctx, trail + [f"{node.symbol}[{i}]"])
            modules.append(module)
        return Sequence(node.symbol, modules), ctx
    opener, closer = resolve_op(node.open), resolve_op(node.close)
    split = get_op(opener.op).build(node.in_shape, bound_args(opener))
    arms = []
    for i, arm in enumerate(node.arms):
        module, _ = _build(arm, ctx, trail + [f"arm{i}"])
        arms.append(module)
    merge = get_op(closer.op).build([a.out_shape for a in node.arms], bound_args(closer))
    return Branch(split, arms, merge), ctx


def compile(derivation: Derivation, input_shape: Shape | None = None, head: nn.Module | None = None,
            fuse: bool | list[str] = False) -> Network:
    """Build the network of ``derivation``. ``input_shape`` defaults to the one it
    was sampled for; a different one is re-checked against every shape rule.
    ``fuse=True`` runs every compiler pass (``archgram.compiler.passes``; e.g.
    attention written with primitives becomes one fused attention call), a list
    names the passes; parameters and state_dict keys stay the same."""
    name = derivation.hash()  # of the derivation as given, before any re-typing
    if input_shape is not None and tuple(input_shape) != tuple(derivation.input_shape):
        derivation = derivation.copy()
        derivation.input_shape = tuple(input_shape)
    try:
        derivation.infer_shapes()
    except ArchgramError as exc:  # shape rule refused, malformed tree or unknown op
        raise CompileError(f"derivation {name} does not type-check for input {derivation.input_shape}: {exc}") from None
    try:
        body, _ = _build(derivation.root, (), [])
    except ArchgramError:
        raise
    except Exception as exc:  # an op constructor failed: say which node
        raise CompileError(f"building derivation {name} failed: {type(exc).__name__}: {exc}") from exc
    network = Network(body, derivation, head)
    if fuse:
        from archgram.compiler.passes import run_passes

        run_passes(network, derivation, None if fuse is True else list(fuse))
    return network
