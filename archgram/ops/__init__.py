"""Op registry and the built-in op families (importing this registers them)."""
from archgram.ops import attention, primitives  # noqa: F401  (registers the op families)
from archgram.ops.registry import Arg, MergeOp, Op, OpSpec, SplitOp, all_ops, get_op, has_op, register_op

__all__ = ["Arg", "MergeOp", "Op", "OpSpec", "SplitOp", "all_ops", "get_op", "has_op", "register_op"]
