"""The attention family: one composite op whose axes are registries of parts
(layouts.py, scores.py, patterns.py, positions.py; content-based patterns in
content.py, combiner.py, sparsifiner.py). Importing the package imports every
module in it, which registers the parts: a new part is one new module."""
from archgram.ops.attention.op import Attention
from archgram.ops.attention.parts import LAYOUTS, PATTERNS, POSITIONS, SCORES
from archgram.registry import import_submodules

import_submodules(__name__)

__all__ = ["LAYOUTS", "PATTERNS", "POSITIONS", "SCORES", "Attention"]
