"""Memory ops: Titans' test-time-trained long-term memory (S56) and the Tensor
Brain's concept-memory decoder (S70)."""
from archgram.ops.memory import tensor_brain, titans  # noqa: F401  (registers the ops)
from archgram.ops.memory.tensor_brain import TensorBrainDecoder
from archgram.ops.memory.titans import TitansMemory, memory_apply, memory_grad

__all__ = ["TensorBrainDecoder", "TitansMemory", "memory_apply", "memory_grad"]
