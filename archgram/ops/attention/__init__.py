"""The attention family: one composite op whose axes are registries of parts
(layouts.py, scores.py, patterns.py, positions.py). Importing registers them."""
from archgram.ops.attention import (  # noqa: F401  (registration)
    aaren,
    earlier_qk,
    hierarchical,
    karat,
    l2vit,
    layouts,
    linear,
    patterns,
    positions,
    random_features,
    reversed,
    scores,
    sinks,
    stabilisers,
)
from archgram.ops.attention.op import Attention
from archgram.ops.attention.parts import LAYOUTS, PATTERNS, POSITIONS, SCORES

__all__ = ["LAYOUTS", "PATTERNS", "POSITIONS", "SCORES", "Attention"]
