"""Output heads usable inside a searched network (catalog S03's pointer decoder).
Importing the package registers every module's ops."""
from archgram.ops.heads.pointer import PointerDecoder, PointerHeadOp
from archgram.registry import import_submodules

import_submodules(__name__)

__all__ = ["PointerDecoder", "PointerHeadOp"]
