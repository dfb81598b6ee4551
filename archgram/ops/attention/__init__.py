"""The attention family: one composite op whose axes are registries of parts
(layouts.py, scores.py, patterns.py, positions.py; content-based patterns in
content.py, combiner.py, sparsifiner.py). Importing the package registers them."""
from archgram.ops.attention import (  # noqa: F401  (registration)
    aaren,
    combiner,
    content,
    documents,
    earlier_qk,
    hierarchical,
    karat,
    l2vit,
    layouts,
    linear,
    patterns,
    positions,
    pr_flash,
    random_features,
    reversed,
    scores,
    sinks,
    sparsifiner,
    stabilisers,
    staircase,
)
from archgram.ops.attention.op import Attention
from archgram.ops.attention.parts import LAYOUTS, PATTERNS, POSITIONS, SCORES

__all__ = ["LAYOUTS", "PATTERNS", "POSITIONS", "SCORES", "Attention"]
