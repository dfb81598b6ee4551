"""Known architectures as derivations of any grammar, to seed search.

einspace seeds its regularised evolution with ResNet-18, a wide ResNet, a
transformer and an MLP-Mixer written in its grammar. Here each baseline is a
*deterministic grammar* (``archgram/grammars/baselines/<name>.pcfg``: one
production per rule, one value per argument), so it samples exactly one
architecture; :func:`baseline` samples it and parses that network into the
grammar being searched with :func:`archgram.grammar.match.parse_network`.
The header of each file states how it follows einspace and where it deviates.
"""
from __future__ import annotations

from pathlib import Path

from archgram.errors import ArchgramError
from archgram.grammar.derivation import Derivation
from archgram.grammar.files import SHIPPED
from archgram.grammar.match import parse_network
from archgram.grammar.model import Grammar, load_grammar
from archgram.registry import did_you_mean
from archgram.shapes import Shape

#: Shipped baselines: einspace's seed architectures 'resnet18_no_maxpool',
#: 'transformer' and 'mlp_mixer' (images), and a 1D CNN for sequences.
BASELINES = ("resnet", "vit", "mlp_mixer", "cnn1d")
BASELINE_DIR = SHIPPED / "baselines"


def baseline_path(name: str) -> Path:
    if name not in BASELINES:
        raise ArchgramError(f"unknown baseline '{name}'{did_you_mean(name, BASELINES)}; baselines are: {', '.join(BASELINES)}")
    return BASELINE_DIR / f"{name}.pcfg"


def baseline_grammar(name: str) -> Grammar:
    """The deterministic grammar of baseline ``name``."""
    return load_grammar(baseline_path(name))


def baseline(name: str, grammar: str | Path | Grammar = "einspace", input_shape: Shape = (8, 3, 32, 32)) -> Derivation:
    """Baseline ``name`` as a derivation of ``grammar`` (a Grammar, a path or a
    shipped grammar's name), typed for ``input_shape``.

    The result may exceed the grammar's depth, node and parameter limits
    (``stats["exceeds"]`` lists which): a ResNet-18 is larger than random
    samples of einspace, and einspace seeds with it all the same.
    Raises DerivationError if the grammar cannot express the baseline.
    """
    source = baseline_grammar(name)
    network = source.sample(tuple(input_shape), seed=0)
    target = grammar if isinstance(grammar, Grammar) else load_grammar(grammar)
    derivation = parse_network(target, network, tuple(input_shape))
    derivation.stats["baseline"] = name
    return derivation


__all__ = ["BASELINES", "baseline", "baseline_grammar", "baseline_path"]
