"""Capture attention maps and mask heads of the composite ``attention`` op.

While ``capture(model, ...)`` is active, the op's analysis hook
(``archgram.ops.attention.op.ANALYSIS_HOOK``) hands each attention layer's
per-head outputs, q, k, v, mask and bias here: the map is recomputed from them
(only when asked) and heads whose mask entry is 0 have their output zeroed
before the output projection -- the head mask xi_h of Michel et al. Outside a
capture the op is untouched.

Maps: scores that form weights (softmax, sigmoid, ...; positions that reweight
them) give them exactly; kernelized linear scores give their implied n x n map
(phi(q) phi(k)^T with decay, row-normalised), quadratic but cheap at analysis
sizes; scores with their own contraction (agent, flow, power-law, ...) have none
and are reported as n/a with the reason.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from archgram.analysis.distance import distance_matrix, row_distances, strength_by_distance
from archgram.errors import ArchgramError

#: Distance bins of the attention-strength profile (0 .. 15 tokens or pixels, then "further").
STRENGTH_BINS = 16


class AnalysisError(ArchgramError):
    """An analysis request that cannot be served (bad input, missing weights, ...)."""


class NoAttentionError(AnalysisError):
    """The model has no composite attention layer to analyse."""


def attention_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, op) of every composite attention op, in module order."""
    from archgram.ops.attention.op import Attention

    return [(name, m) for name, m in model.named_modules() if isinstance(m, Attention)]


def heads_of(op: nn.Module) -> int:
    """Attention maps (heads) the op computes: the axis the head mask indexes."""
    return int(op.layout.heads)


def attention_map(op, q, k, v, mask, bias) -> tuple[torch.Tensor | None, str]:
    """(weights (B, H, Nq, Nk) or None, how they were obtained or why there are none)."""
    from archgram.ops.attention.linear import KernelScore
    from archgram.ops.attention.linear_forms import EPS, kernel_attention_parallel
    from archgram.ops.attention.scores import Score

    score = op.score

    def weights() -> torch.Tensor:
        logits = score.logits(q, k, op.scale)
        if bias is not None:
            logits = logits + bias
        return score.weights(logits, mask)

    dense = op.pattern.dense_weights(q, k, op.scale) if op.factorised else None
    if dense is not None:
        return dense, f"{score.name} weights of pattern {op.pattern.name} (its own contraction, written out)"
    if op.position.reweights:
        return op.position.reweight(weights(), mask, op.grid), f"{score.name} weights reweighted by {op.position.name}"
    if type(score).attend is Score.attend:
        return weights(), f"{score.name} weights"
    if isinstance(score, KernelScore):
        fq, fk = score.features(q, k, op.scale)
        causal = op.causal or mask is not None
        eye = torch.eye(fk.shape[-2], dtype=fq.dtype, device=fq.device)
        num = kernel_attention_parallel(fq, fk, eye, causal=causal, decay=score.decay(q.device))
        if score.normalize:
            num = num / (num.sum(-1, keepdim=True) + EPS)
        how = f"implied map of linear score {score.name}"
        if type(score).finish is not KernelScore.finish:
            how += " (before its per-token output transform)"
        return num, how
    return None, f"score '{score.name}' has its own contraction and forms no attention map"


class Capture:
    """What one capture collected: per layer the first example's maps, running
    sums of mean attention distance, and how the maps were obtained."""

    def __init__(self, layers: list[tuple[str, nn.Module]], maps: bool, head_mask: dict[str, torch.Tensor]):
        self.names = {id(m): name for name, m in layers}
        self.want_maps = maps
        self.head_mask = head_mask
        self.example: dict[str, torch.Tensor] = {}  # name -> (H, Nq, Nk), first example seen
        self.how: dict[str, str] = {}
        self.dist_sum: dict[str, torch.Tensor] = {}  # name -> (H,)
        self.dist_count: dict[str, torch.Tensor] = {}
        self.strength_sum: dict[str, torch.Tensor] = {}  # name -> (H, STRENGTH_BINS), summed over calls
        self.strength_calls: dict[str, int] = {}

    def __call__(self, op, out, q, k, v, mask, bias):
        name = self.names.get(id(op))
        if name is None:
            return out
        if self.want_maps:
            with torch.no_grad():
                self._record(name, op, q, k, v, mask, bias)
        hm = self.head_mask.get(name)
        if hm is not None:
            out = out * hm.to(dtype=out.dtype, device=out.device).view(1, -1, 1, 1)
        return out

    def _record(self, name, op, q, k, v, mask, bias) -> None:
        w, how = attention_map(op, q, k, v, mask, bias)
        self.how[name] = how
        if w is None:
            return
        self.example.setdefault(name, w[0].detach().float().cpu())
        dmat = distance_matrix(w.shape[-2], w.shape[-1], op.grid, w.device)
        if dmat is None:
            self.how[name] = how + "; no distance (keys are a reduced map)"
            return
        rows = row_distances(w, dmat)
        ok = ~torch.isnan(rows)
        s = torch.where(ok, rows, torch.zeros_like(rows)).sum((0, 2)).cpu().double()
        c = ok.sum((0, 2)).cpu().double()
        self.dist_sum[name] = self.dist_sum.get(name, 0) + s
        self.dist_count[name] = self.dist_count.get(name, 0) + c
        strength = strength_by_distance(w, dmat, STRENGTH_BINS).cpu().double()
        self.strength_sum[name] = self.strength_sum.get(name, 0) + strength
        self.strength_calls[name] = self.strength_calls.get(name, 0) + 1

    def strength(self) -> dict[str, list[list[float]]]:
        """Layer -> per head, attention strength at distance 0, 1, ... (last bin: further)."""
        return {n: (self.strength_sum[n] / self.strength_calls[n]).tolist() for n in self.strength_sum}

    def mean_distance(self) -> dict[str, list[float]]:
        """Layer -> mean attention distance per head (tokens or pixels)."""
        return {n: (self.dist_sum[n] / self.dist_count[n].clamp(min=1)).tolist() for n in self.dist_sum}


@contextlib.contextmanager
def capture(model: nn.Module, *, maps: bool = True,
            head_mask: dict[str, torch.Tensor] | None = None) -> Iterator[Capture]:
    """Within the block, forward passes of ``model`` record attention maps
    (``maps``) and zero the heads whose ``head_mask[layer]`` entry is 0."""
    from archgram.ops.attention import op as attention_op

    layers = attention_layers(model)
    if not layers:
        raise NoAttentionError("the model has no attention layer (composite 'attention' op) to analyse")
    if attention_op.ANALYSIS_HOOK is not None:
        raise AnalysisError("an attention capture is already active (captures do not nest)")
    by_name = dict(layers)
    masks = {}
    for name, m in (head_mask or {}).items():
        if name not in by_name:
            raise AnalysisError(f"head mask for unknown attention layer '{name}' (layers: {', '.join(by_name)})")
        m = torch.as_tensor(m)
        if m.shape != (heads_of(by_name[name]),):
            raise AnalysisError(f"head mask for '{name}' has shape {tuple(m.shape)}; the layer has {heads_of(by_name[name])} heads")
        masks[name] = m
    cap = Capture(layers, maps, masks)
    attention_op.ANALYSIS_HOOK = cap
    try:
        yield cap
    finally:
        attention_op.ANALYSIS_HOOK = None
