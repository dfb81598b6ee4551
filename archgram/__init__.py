"""archgram: neural architecture search over probabilistic grammars.

    g = archgram.load_grammar("einspace")          # or a path to a .pcfg file
    d = g.sample((8, 3, 32, 32), seed=0)            # a shape-typed derivation
    model = archgram.compile(d, (8, 3, 32, 32))     # a plain nn.Module
    study = archgram.search("einspace", data="train.npz", trials=16)   # -> Study
    study = archgram.open_study("runs/train.db")
    report = archgram.check_grammar(g, (8, 3, 32, 32), n=20)   # what `archgram check` runs
    summary = archgram.sample_grammar(g, (8, 3, 32, 32), n=20, out="samples/")   # `archgram sample`
"""
import importlib
import sys
import types

from archgram.errors import ArchgramError, CompileError, GrammarError, SamplingError, ShapeError
from archgram.export import export

__version__ = "0.1.0"

#: Imported on first use (PEP 562), so ``import archgram.kernels`` (the GPU image
#: runs the kernel tests and benchmarks) does not need lark, the grammar's parser.
_LAZY = {"compile": "archgram.compiler", "Derivation": "archgram.grammar", "Grammar": "archgram.grammar",
         "Limits": "archgram.grammar", "load_grammar": "archgram.grammar", "Study": "archgram.api",
         "open_study": "archgram.api", "check_grammar": "archgram.compiler.check",
         "sample_grammar": "archgram.grammar.samples"}


class _SearchEntry:
    """``archgram.search``: the API's ``search(...) -> Study`` when called, and the
    ``archgram.search`` subpackage (strategies, runner, store, ...) for every
    attribute, so ``archgram.search.runner`` keeps working."""

    __doc__ = "archgram.search(grammar, task=... | data=..., ...) -> Study; see archgram.api.search."

    def __call__(self, *args, **kwargs):
        return importlib.import_module("archgram.api").search(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(importlib.import_module("archgram.search"), name)

    def __dir__(self):
        return dir(importlib.import_module("archgram.search"))

    def __repr__(self) -> str:
        return "<archgram.search: call it to search; its attributes are the archgram.search package>"


class _Package(types.ModuleType):
    """Keeps ``archgram.search`` the callable entry point when Python's import
    system binds the subpackage of the same name onto this module."""

    def __setattr__(self, name: str, value) -> None:
        if name == "search" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


search = _SearchEntry()
sys.modules[__name__].__class__ = _Package


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
    "open_study",
    "search",
    "Study",
    "check_grammar",
    "sample_grammar",
]
