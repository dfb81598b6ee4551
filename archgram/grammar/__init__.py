"""Grammar language, model, sampler, derivations and edits."""
from archgram.grammar.derivation import BranchNode, Derivation, OpNode, RuleNode
from archgram.grammar.model import Grammar, Limits, load_grammar

__all__ = ["BranchNode", "Derivation", "Grammar", "Limits", "OpNode", "RuleNode", "load_grammar"]
