"""Output heads usable inside a searched network (catalog S03's pointer decoder)."""
from archgram.ops.heads import pointer  # noqa: F401  (registers the op)
from archgram.ops.heads.pointer import PointerDecoder, PointerHeadOp

__all__ = ["PointerDecoder", "PointerHeadOp"]
