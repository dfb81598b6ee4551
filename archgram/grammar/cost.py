"""What a typed derivation subtree costs, counted from the ops' shape rules
(no module is built): op nodes, parameters, forward FLOPs of one batch, and
activation elements. The sampler's budgets, mutation's stretched limits, the
matcher's parse statistics and the evaluator's FLOP count all read this one
count."""
from __future__ import annotations

from archgram.grammar.inference import bound_args, resolve_op
from archgram.grammar.tree import BranchNode, Node, OpNode, RuleNode
from archgram.ops.registry import get_op
from archgram.shapes import numel


def cost(node: Node, ctx: tuple | None = None) -> tuple[int, int, int, int]:
    """(nodes, params, flops, memory) of a typed subtree. ``ctx`` is the context
    the subtree starts with (``()`` for a whole derivation): context ops (im2col
    opening a patch grid for col2im, stored-layer readers) then size their
    parameters from it. None, for a subtree cut out of its tree, counts each
    op without context."""
    totals, _ = _cost(node, ctx)
    return tuple(totals)


def _cost(node: Node, ctx: tuple | None) -> tuple[list[int], tuple | None]:
    if isinstance(node, OpNode):
        spec = get_op(node.op)
        args = bound_args(node)
        if ctx is None:
            params = spec.param_count(node.in_shape, args)
        else:
            params = spec.param_count(node.in_shape, args, ctx)
            ctx = spec.cls.transfer(node.in_shape, ctx, **args)[1]
        flops = spec.cls.flops(node.in_shape, node.out_shape, params, **args)
        return [1, params, flops, numel(node.out_shape)], ctx
    totals = [0, 0, 0, 0]
    if isinstance(node, RuleNode):
        for child in node.children:
            part, ctx = _cost(child, ctx)
            totals = [a + b for a, b in zip(totals, part, strict=True)]
        return totals, ctx
    assert isinstance(node, BranchNode)
    opener, closer = resolve_op(node.open), resolve_op(node.close)
    split, merge = get_op(opener.op), get_op(closer.op)
    outs = [a.out_shape for a in node.arms]
    merge_params = merge.param_count(tuple(outs), bound_args(closer))
    totals = [2, split.param_count(node.in_shape, bound_args(opener)) + merge_params,
              merge.cls.flops(outs, node.out_shape, merge_params, **bound_args(closer)), numel(node.out_shape)]
    for arm in node.arms:  # every arm starts from the context before the split
        part, _ = _cost(arm, ctx)
        totals = [a + b for a, b in zip(totals, part, strict=True)]
    return totals, ctx
