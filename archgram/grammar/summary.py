"""Plain-data summaries of a grammar and a derivation, for reports (``archgram
check`` / ``sample``, their JSON) that must not depend on how they are printed."""
from __future__ import annotations

from collections import Counter
from typing import Any


def normalisation_notes(grammar) -> dict[str, str]:
    """Per rule, how its written @-weights became probabilities: 'as written',
    'rescaled (sum 2)', or 'N unannotated share R'. Read from the rule syntax."""
    notes: dict[str, str] = {}
    syntax = getattr(grammar, "_syntax", None) or {}
    for name, syn in syntax.items():
        weights = [a.weight for a in syn.alternatives]
        given = sum(w for w in weights if w is not None)
        free = sum(1 for w in weights if w is None)
        if free == len(weights):
            notes[name] = "uniform" if free > 1 else "-"
        elif free:
            notes[name] = f"rest {max(0.0, 1 - given):.3g} to {free} unannotated"
        elif abs(given - 1) > 1e-6:
            notes[name] = f"rescaled from sum {given:.6g}"
        else:
            notes[name] = "as written"
    return notes


def rules_summary(grammar) -> list[dict[str, Any]]:
    """Each rule with its kind, location and productions' probabilities."""
    notes = normalisation_notes(grammar)
    out = []
    for name, rule in grammar.rules.items():
        out.append(
            {
                "name": name,
                "kind": rule.kind,
                "location": str(rule.loc),
                "start": name == grammar.start,
                "normalisation": notes.get(name, ""),
                "productions": [
                    {"index": p.index, "prob": p.prob, "text": p.text, "location": str(p.loc)} for p in rule.productions
                ],
            }
        )
    return out


def op_counts(derivation) -> dict[str, int]:
    """How often each op occurs in a derivation, most frequent first."""
    counts = Counter(n.op for n in derivation.ops())
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
