"""Distributed execution helpers on ``torch.distributed``.

``context_parallel``: attention over a sequence sharded across ranks (ring and
Ulysses all-to-all; catalog row S14); ``usp``: their hybrid (Ulysses inside
groups, ring across groups). ``blocks``: the per-block attention math
and log-sum-exp merging they share. Importing this package pulls in torch only
(no grammar parser), so GPU scripts can use it on a lean image.
"""

#: Catalog rows this package implements (read by archgram.catalog).
CATALOG_REFS = {"distributed:ring_attention": ("S14",), "distributed:ulysses_attention": ("S14",),
                "distributed:usp_attention": ("S14",)}
