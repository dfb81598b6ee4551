"""``tuning_effect``: what switching experts off does to a model's outputs,
measured against the same tuning applied by hand to a copy."""
from __future__ import annotations

import copy

import torch

import archgram
from archgram.analysis.experts import moe_layers, tune_experts, tuning_effect


def _moe_model():
    g = archgram.Grammar.from_text("start net\nnet : linear(out=8) moe(experts=4, k=2) linear(out=3)\n")
    torch.manual_seed(0)
    return archgram.compile(g.sample((4, 5, 6), seed=0)).eval()


def test_tuning_effect_is_the_mean_change_and_the_flipped_argmax_share():
    model = _moe_model()
    layer = next(iter(moe_layers(model)))
    sets = {"A": [torch.randn(4, 5, 6) for _ in range(2)], "B": [torch.randn(4, 5, 6)]}
    by_hand = copy.deepcopy(model)
    with torch.no_grad():
        before = {k: torch.cat([by_hand(x) for x in v]) for k, v in sets.items()}
        tune_experts(by_hand, disable=[(layer, 0), (layer, 1)])
        after = {k: torch.cat([by_hand(x) for x in v]) for k, v in sets.items()}

    effect = tuning_effect(model, sets, disable=[(layer, 0), (layer, 1)])

    for k in sets:
        change = (after[k] - before[k]).abs().mean().item()
        flips = (after[k].argmax(-1) != before[k].argmax(-1)).float().mean().item()
        assert effect[k]["mean_change"] == change > 0
        assert effect[k]["changed_predictions"] == flips
    with torch.no_grad():  # the model stays tuned
        assert torch.equal(model(sets["B"][0]), after["B"])
