"""Compiler passes over a compiled network and its derivation.

A pass finds patterns in the derivation (plain data, easy to match) and
rewrites the matching modules of the compiled ``Network`` in place, keeping
every parameter where it was: the rewritten network has the same state_dict
keys and tensors as the plain one, so weights load into either.
``archgram.compile(d, fuse=True)`` runs every registered pass.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from archgram.errors import CompileError
from archgram.registry import Registry, import_submodules


@dataclass(frozen=True)
class PassSpec:
    """One pass: what it finds (``find(derivation) -> matches``) and how it
    rewrites (``apply(network, derivation) -> matches applied``)."""

    name: str
    find: Callable
    apply: Callable
    refs: tuple[str, ...] = ()
    doc: str = ""


#: Every pass by name; the first lookup imports each module of this package (a
#: pass registers itself with ``@register_pass``: lower.py's fuse_attention).
PASSES: Registry[PassSpec] = Registry("compiler pass", error=CompileError,
                                      loader=lambda: import_submodules("archgram.compiler.passes"),
                                      same=lambda old, new: old.apply is new.apply)


def register_pass(name: str, *, find: Callable, refs: tuple[str, ...] = ()):
    """Decorator registering ``apply`` as the pass ``name``."""

    def deco(apply: Callable) -> Callable:
        PASSES.add(name, PassSpec(name, find, apply, tuple(refs), (apply.__doc__ or "").strip().split("\n")[0]))
        return apply

    return deco


def get_pass(name: str) -> PassSpec:
    return PASSES.get(name)


def all_passes() -> list[PassSpec]:
    return PASSES.values()


def run_passes(network, derivation, names: list[str] | None = None) -> dict[str, list]:
    """Apply the named passes (default: all) to ``network``; {pass: matches applied}."""
    specs = all_passes() if names is None else [get_pass(n) for n in names]
    return {spec.name: spec.apply(network, derivation) for spec in specs}

