"""Derivation -> nn.Module.

Each node becomes a module named after what it is: ops by their op name,
rules by their symbol, branches as ``Branch`` holding the split op, one module
per arm and the merge op. ``print(model)`` therefore reads like the derivation.
Shapes come from the same inference the sampler used; a failure names the node.
"""
from __future__ import annotations

from torch import nn

from archgram.compiler.modules import Branch, Network, Sequence
from archgram.compiler.passes import run_passes
from archgram.errors import ArchgramError, CompileError
from archgram.grammar.derivation import Derivation, Node, OpNode, RuleNode
from archgram.grammar.inference import bound_args, resolve_op
from archgram.ops.registry import get_op
from archgram.shapes import Shape


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
        run_passes(network, derivation, None if fuse is True else list(fuse))
    return network
