"""Derivation -> nn.Module."""
from archgram.compiler.build import Branch, Network, Sequence, compile

__all__ = ["Branch", "Network", "Sequence", "compile"]
