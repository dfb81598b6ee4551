"""Op registry and the built-in op families (importing this registers them)."""
# Importing each family registers its ops.
from archgram.ops import (  # noqa: F401
    attention,
    conv,
    heads,
    memory,
    mixers,
    moe,
    operators,
    primitives,
    vision,
)
from archgram.ops.registry import Arg, MergeOp, Op, OpSpec, SplitOp, all_ops, get_op, has_op, register_op

__all__ = ["Arg", "MergeOp", "Op", "OpSpec", "SplitOp", "all_ops", "get_op", "has_op", "register_op"]
