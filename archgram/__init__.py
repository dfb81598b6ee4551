"""archgram: neural architecture search over probabilistic grammars.

    g = archgram.load_grammar("einspace")          # or a path to a .pcfg file
    d = g.sample((8, 3, 32, 32), seed=0)            # a shape-typed derivation
    model = archgram.compile(d, (8, 3, 32, 32))     # a plain nn.Module
"""
import importlib

from archgram.errors import ArchgramError, CompileError, GrammarError, SamplingError, ShapeError
from archgram.export import export

__version__ = "0.1.0"

#: Imported on first use (PEP 562), so ``import archgram.kernels`` (the GPU image
#: runs the kernel tests and benchmarks) does not need lark, the grammar's parser.
_LAZY = {"compile": "archgram.compiler", "Derivation": "archgram.grammar", "Grammar": "archgram.grammar",
         "Limits": "archgram.grammar", "load_grammar": "archgram.grammar"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'archgram' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value

__all__ = [
    "ArchgramError",
    "CompileError",
    "Derivation",
    "Grammar",
    "GrammarError",
    "Limits",
    "SamplingError",
    "ShapeError",
    "compile",
    "export",
    "load_grammar",
]
