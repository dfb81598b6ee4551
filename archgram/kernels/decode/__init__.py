"""Decode-phase attention kernels (Lean Attention, catalog S25).

``reference``: naive softmax over each sequence's cache (float64 oracle);
``lean``: Lean Attention -- the stream-K partition of all (sequence, KV head)
key blocks over a fixed set of programs, partials merged by the associative
softmax reduction (what decoding uses); ``split``: flash-decoding, equal KV
splits per (sequence, KV head), kept as the baseline Lean Attention improves
on; ``dispatch``: when the attention op's KV-cache decoding uses ``lean``.

Fidelity (S25): Paper: treat the softmax rescaling as an associative reduction
so decode attention can be tiled stream-K style -- the total work (LeanTiles of
every head and sequence) is split evenly over the GPU's compute units whatever
the context lengths, programs crossing head boundaries and partial results
reduced exactly. archgram: ``lean.py`` does exactly that in Triton (equal
shares of the global key-block space, per-tile partials merged by a reduction
kernel, no host sync on lengths). Differs: the merge is a second kernel rather
than the paper's in-kernel host-CTA reduction with flags (same arithmetic, one
more launch); tensor-parallel multi-GPU partitioning is left to the
distributed engine.

Kept free of Triton imports so ``archgram catalog`` can read ``REFS`` cheaply.
"""

#: Catalog rows this kernel family implements.
REFS = ("S25",)
