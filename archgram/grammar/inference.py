"""Shape inference over a derivation tree: the one walker the sampler's output,
loaded JSON, mutation and the compiler all trust. It asks each op's shape rule,
the same one the sampler asked, and names the offending node on failure."""
from __future__ import annotations

from archgram.errors import DerivationError, ShapeError
from archgram.grammar.tree import Node, OpNode, RuleNode
from archgram.ops.registry import get_op
from archgram.shapes import Shape, fmt


def resolve_op(node: Node) -> OpNode:
    """The op behind a split/merge slot (which may be a rule wrapping one op)."""
    while isinstance(node, RuleNode):
        if len(node.children) != 1:
            raise DerivationError(f"<{node.symbol}> in a split/merge slot must hold exactly one op")
        node = node.children[0]
    if not isinstance(node, OpNode):
        raise DerivationError("a split/merge slot must hold an op, not a branch")
    return node


def bound_args(node: OpNode) -> dict:
    spec = get_op(node.op)
    try:
        return spec.bind(node.args)
    except TypeError as exc:
        raise DerivationError(str(exc)) from None


def _mark(node: Node, shape_in, shape_out) -> None:
    node.in_shape, node.out_shape = shape_in, shape_out


def infer(node: Node, shape: Shape, ctx: tuple, trail: str = "") -> tuple[Shape, tuple]:
    """Annotate ``node`` (recursively) with in/out shapes; return (out, ctx).
    Errors name the node by its path, e.g. ``network/module#2[0]/linear``."""
    if isinstance(node, OpNode):
        spec = get_op(node.op)
        if spec.kind != "unary":
            raise DerivationError(f"{trail}{node.op}: a {spec.kind} op cannot stand in a sequence")
        try:
            out, ctx = spec.cls.transfer(shape, ctx, **bound_args(node))
        except ShapeError as exc:
            raise ShapeError(f"at {trail}{node.op} with input {fmt(shape)}: {exc}") from None
        _mark(node, shape, out)
        return out, ctx
    if isinstance(node, RuleNode):
        start = shape
        for i, child in enumerate(node.children):
            shape, ctx = infer(child, shape, ctx, f"{trail}{node.symbol}#{node.alt}[{i}]/")
        _mark(node, start, shape)
        return shape, ctx
    opener, closer = resolve_op(node.open), resolve_op(node.close)
    split, merge = get_op(opener.op), get_op(closer.op)
    if split.kind != "split" or merge.kind != "merge":
        raise DerivationError(f"branch must open with a split op and close with a merge op, got {opener.op}/{closer.op}")
    try:
        arm_shapes = split.cls.output_shapes(shape, **bound_args(opener))
    except ShapeError as exc:
        raise ShapeError(f"at {trail}{opener.op} with input {fmt(shape)}: {exc}") from None
    if len(arm_shapes) != len(node.arms):
        raise DerivationError(f"{opener.op} opens {len(arm_shapes)} branches but the node has {len(node.arms)}")
    _mark(node.open, shape, shape)
    outs, ctxs = [], []
    for i, (arm, arm_shape) in enumerate(zip(node.arms, arm_shapes)):
        out, arm_ctx = infer(arm, arm_shape, ctx, f"{trail}arm{i}/")
        outs.append(out)
        ctxs.append(arm_ctx)
    if len(set(ctxs)) != 1:
        raise ShapeError(f"at {trail}{closer.op}: branches end in different routing contexts (an im2col without its col2im)")
    try:
        out = merge.cls.output_shape(outs, **bound_args(closer))
    except ShapeError as exc:
        raise ShapeError(f"at {trail}{closer.op} with inputs {', '.join(map(fmt, outs))}: {exc}") from None
    _mark(node.close, outs, out)
    for slot in (node.open, node.close):
        if isinstance(slot, RuleNode):
            inner = resolve_op(slot)
            _mark(inner, slot.in_shape, slot.out_shape)
    _mark(node, shape, out)
    return out, ctxs[0]
