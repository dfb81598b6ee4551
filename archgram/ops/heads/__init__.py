"""Output heads usable inside a searched network (catalog S03's pointer head)."""
from archgram.ops.heads import pointer  # noqa: F401  (registers the op)
from archgram.ops.heads.pointer import PointerHeadOp

__all__ = ["PointerHeadOp"]
