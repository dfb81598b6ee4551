"""Split-KV decode attention (flash-decoding / Lean Attention, catalog S25).

``reference``: naive softmax over each sequence's cache (float64 oracle);
``split``: the Triton partial kernel (one program per KV chunk and KV head)
and the reduction kernel merging partial (out, lse) pairs; ``dispatch``: when
the attention op's KV-cache decoding uses them.

Kept free of Triton imports so ``archgram catalog`` can read ``REFS`` cheaply.
"""

#: Catalog rows this kernel family implements.
REFS = ("S25",)
