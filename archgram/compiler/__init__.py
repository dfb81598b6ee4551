"""Derivation -> nn.Module."""
from archgram.compiler.build import compile
from archgram.compiler.modules import Branch, Network, Sequence

__all__ = ["Branch", "Network", "Sequence", "compile"]
