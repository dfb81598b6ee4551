"""Memory ops: Titans' test-time-trained long-term memory (S56) and the Tensor
Brain's concept-memory decoder (S70). Importing the package registers every module's ops."""
from archgram.ops.memory.tensor_brain import TensorBrainDecoder
from archgram.ops.memory.titans import TitansMemory, memory_apply, memory_grad
from archgram.registry import import_submodules

import_submodules(__name__)

__all__ = ["TensorBrainDecoder", "TitansMemory", "memory_apply", "memory_grad"]
