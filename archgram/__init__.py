"""archgram: neural architecture search over probabilistic grammars.

    g = archgram.load_grammar("einspace")          # or a path to a .pcfg file
    d = g.sample((8, 3, 32, 32), seed=0)            # a shape-typed derivation
    model = archgram.compile(d, (8, 3, 32, 32))     # a plain nn.Module
"""
from archgram.compiler import compile
from archgram.errors import ArchgramError, CompileError, GrammarError, SamplingError, ShapeError
from archgram.export import export
from archgram.grammar import Derivation, Grammar, Limits, load_grammar

__version__ = "0.1.0"

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
