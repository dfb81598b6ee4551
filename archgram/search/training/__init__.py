"""Training methods the evaluator can switch on with ``train_options``.

Each method changes the training loss of one step, never the architecture:
``adversarial="attention_at"`` (adversarial training for attention, catalog
S74) and ``"attention_vat"`` (virtual adversarial training for attention, S75),
with their interpretable variants ``"attention_iat"`` / ``"attention_ivat"``,
perturb every attention layer's logits; ``"at"`` and ``"vat"`` perturb the
embedding, the stem's output that the searched body receives. ``parse_cli`` turns ``--train-option`` words into the
``train_options`` dict the evaluator checks.
"""
from __future__ import annotations

from archgram.search.training.adversarial import METHODS, AdversarialMethod, get_method, perturbation, training_loss
from archgram.search.training.options import parse_cli

#: rows implemented here, for ``archgram catalog`` (label -> refs)
CATALOG_REFS = {f"train:{name}": method.refs for name, method in METHODS.items()}

__all__ = ["CATALOG_REFS", "METHODS", "AdversarialMethod", "get_method", "parse_cli", "perturbation", "training_loss"]
