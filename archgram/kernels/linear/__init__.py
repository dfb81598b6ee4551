"""Chunked linear attention (Lightning Attention-2 tiling, catalog S04/S48).

``reference``: the naive O(N^2) masked formula (float64 oracle);
``chunk``: the Triton chunked kernel and its autograd Function (forward, and a
backward made of three passes of the same kernel); ``recurrent``: the one-token
state update for decoding; ``dispatch``: when the op uses them.

Kept free of Triton imports so ``archgram catalog`` can read ``REFS`` cheaply.
"""

#: Catalog rows this kernel family implements.
REFS = ("S04", "S48")
