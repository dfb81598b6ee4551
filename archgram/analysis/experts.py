"""Behaviour-specific experts of a routed MoE model and tuning them (Mixture of
Tunable Experts, catalog S53).

Identification follows the paper's "functional Token Resonance Imaging": run
the model on inputs that elicit a behaviour (set A) and on reference inputs
(set B), record per layer which experts each token activates, and rank experts
by how much more often set A activates them (rate_A - rate_B). Tuning then
switches the top ones off (``disable``) or forces them on (``force``) without
retraining.

Works on any ``nn.Module`` holding routed-MoE layers: archgram-built models and
``archgram export``'s model.py alike (a layer is recognised by its interface,
``tune``/``route``/``counts``, not by its class, since an export vendors a copy).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Distinctive:
    """One expert of one layer, with its activation rates on sets A and B."""

    layer: str
    expert: int
    rate_a: float
    rate_b: float

    @property
    def difference(self) -> float:
        return self.rate_a - self.rate_b


def moe_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Routed-MoE layers of ``model`` by module name."""
    return {name: m for name, m in model.named_modules()
            if callable(getattr(m, "tune", None)) and callable(getattr(m, "route", None)) and hasattr(m, "counts")}


def _layers_or_error(model: nn.Module) -> dict[str, nn.Module]:
    layers = moe_layers(model)
    if not layers:
        raise ValueError("the model has no routed mixture-of-experts layer ('moe' op)")
    return layers


@torch.no_grad()
def activation_rates(model: nn.Module, batches: Iterable[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per MoE layer, the fraction of tokens whose k experts included each expert,
    over all ``batches`` (model inputs). The model is run in eval mode."""
    layers = _layers_or_error(model)
    was_training = model.training
    model.eval()
    for layer in layers.values():
        layer.reset_stats()
    try:
        for x in batches:
            model(x)
        return {name: layer.activation_rates().clone() for name, layer in layers.items()}
    finally:
        model.train(was_training)


def distinctive_experts(model: nn.Module, set_a: Iterable[torch.Tensor], set_b: Iterable[torch.Tensor],
                        top: int | None = 10) -> list[Distinctive]:
    """Experts ranked by how much more often inputs of set A activate them than
    inputs of set B (largest rate_A - rate_B first), over every MoE layer."""
    a, b = activation_rates(model, set_a), activation_rates(model, set_b)
    found = [Distinctive(name, e, float(a[name][e]), float(b[name][e]))
             for name in a for e in range(a[name].numel())]
    found.sort(key=lambda d: (-d.difference, d.layer, d.expert))
    return found if top is None else found[:top]


def tune_experts(model: nn.Module, disable: Iterable[tuple[str, int]] = (),
                 force: Iterable[tuple[str, int]] = (), steer: Mapping[tuple[str, int], float] | None = None) -> None:
    """Tune MoE layers from (layer, expert) pairs: each layer named gets exactly the
    given disabled / forced / steered experts; layers not named keep their tuning."""
    layers = _layers_or_error(model)
    per: dict[str, dict] = {name: {"disable": set(), "force": set(), "steer": {}} for name in layers}
    for what, pairs in (("disable", disable), ("force", force)):
        for name, e in pairs:
            if name not in per:
                raise ValueError(f"no MoE layer '{name}' (layers: {', '.join(per)})")
            per[name][what].add(int(e))
    for (name, e), v in (steer or {}).items():
        if name not in per:
            raise ValueError(f"no MoE layer '{name}' (layers: {', '.join(per)})")
        per[name]["steer"][int(e)] = float(v)
    named = {name for name, _ in (*disable, *force)} | {name for name, _ in (steer or {})}
    for name in named:
        layers[name].tune(**per[name])


def tuning_effect(model: nn.Module, sets: Mapping[str, Iterable[torch.Tensor]], disable: Iterable[tuple[str, int]] = (),
                  force: Iterable[tuple[str, int]] = ()) -> dict[str, dict[str, float]]:
    """Tune the experts (as ``tune_experts``; the model stays tuned) and say what
    it did to each named set of input batches: the mean absolute change of the
    outputs, and the share of argmax predictions that changed (nan for outputs
    without a class axis)."""
    sets = {name: list(batches) for name, batches in sets.items()}
    with torch.no_grad():
        before = {name: torch.cat([model(x) for x in batches]) for name, batches in sets.items()}
        tune_experts(model, disable=list(disable), force=list(force))
        after = {name: torch.cat([model(x) for x in batches]) for name, batches in sets.items()}
    out = {}
    for name, y0 in before.items():
        y1 = after[name]
        flips = (y1.argmax(-1) != y0.argmax(-1)).float().mean().item() if y0.dim() > 1 else float("nan")
        out[name] = {"mean_change": (y1 - y0).abs().mean().item(), "changed_predictions": flips}
    return out
