"""The composite attention op: layout x score x pattern x position, each axis an
independent grammar choice.

On sequences (B, N, D) tokens are the N positions; on images (B, C, H, W) they
are the H*W pixels, and 2D patterns and positions see the (H, W) grid. The
shape rule resolves every part, so an unknown part or an impossible
combination (a 2D pattern on a sequence, RoPE on an odd head dim) is refused
while sampling, with its reason.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from archgram.errors import ShapeError
from archgram.ops.attention.content import compressed_attend
from archgram.ops.attention.gathered import gathered_attend, selection_mask
from archgram.ops.attention.parts import LAYOUTS, PATTERNS, POSITIONS, SCORES, kernel_keywords
from archgram.ops.attention.positions import Position
from archgram.ops.attention.scores import Score, Softmax
from archgram.ops.registry import Arg, Op, check_rank, register_op
from archgram.shapes import IMAGE_RANK, Shape

#: Opt-in analysis hook (``archgram.analysis.capture`` sets it while capturing):
#: ``hook(op, out, q, k, v, mask, bias)`` sees the per-head outputs (B, H, N, d)
#: before the output projection and returns the ones to use (e.g. with heads
#: masked). None, the default, costs one global lookup per forward.
ANALYSIS_HOOK = None

#: Opt-in logit hook (adversarial training on attention, S74/S75, sets it):
#: ``hook(op, q, k)`` returns a tensor added to the op's attention logits
#: (broadcast to (B, H, Nq, Nk)) or None. Asked on the dense path only, by ops
#: whose score forms logits (``takes_bias``); a perturbed op runs its PyTorch path.
LOGIT_HOOK = None


def _geometry(shape: Shape) -> tuple[int, int, tuple[int, int] | None]:
    """(tokens, channels, grid) of an input shape."""
    if len(shape) == IMAGE_RANK:
        _, c, h, w = shape
        return h * w, c, (h, w)
    return shape[1], shape[2], None


def adds_bias(position_cls: type[Position]) -> bool:
    """Whether a position scheme adds a logit bias (ALiBi, RoPE+ALiBi, URPE's B):
    its ``adds_bias`` flag if it declares one, else whether it overrides ``bias``."""
    flag = getattr(position_cls, "adds_bias", None)
    return bool(flag) if flag is not None else position_cls.bias is not Position.bias


def _refuse_for_reduced_keys(layout_cls, score_cls, pattern_obj, position_cls, causal) -> None:
    """Layouts that attend to fewer key tokens than queries (SSA) have no square
    n x n map: masks, positions over token offsets and scores with their own
    contraction or head-dim-sized weights cannot follow."""
    why = None
    if causal or pattern_obj.name != "full":
        why = f"pattern '{pattern_obj.name}'{' with causal' if causal else ''} (only full, non-causal)"
    elif position_cls.name != "none":
        why = f"position '{position_cls.name}' (only none)"
    elif score_cls.attend is not Score.attend or score_cls.build.__func__ is not Score.build.__func__:
        why = f"score '{score_cls.name}' (its own contraction or head-dim-sized weights)"
    if why:
        raise ShapeError(f"layout '{layout_cls.name}' attends to spatially reduced keys: it cannot serve {why}")


def _resolve(shape: Shape, heads, kv_heads, head_dim, layout, score, pattern, position, causal):
    check_rank("attention", shape, 3, 4)
    n, dim, grid = _geometry(shape)
    if heads < 1:
        raise ShapeError("attention needs at least one head")
    if not head_dim and dim % heads:
        raise ShapeError(f"attention: {dim} channels do not split into {heads} heads (set head_dim)")
    head_dim = head_dim or dim // heads
    layout_cls, layout_kw = LAYOUTS.resolve(layout)
    layout_cls.check(dim, heads, kv_heads, head_dim, **layout_kw)
    layout_cls.check_geometry(n, grid, **layout_kw)
    # the attention maps computed (SQA computes fewer, TPLA one per head and shard)
    maps = layout_cls.attention_heads(heads, **layout_kw)
    qk_dim = layout_cls.qk_dim(head_dim, dim=dim, **layout_kw)  # SSA compresses q/k channels
    score_cls, score_kw = SCORES.resolve(score)
    pattern_cls, pattern_kw = PATTERNS.resolve(pattern)
    pattern_obj = pattern_cls(**pattern_kw)
    pattern_obj.check(n, grid)
    score_cls.check(pattern_obj, causal, score_kw)
    score_cls.check_shape(n, qk_dim, score_kw)
    position_cls, position_kw = POSITIONS.resolve(position)
    position_cls.check(maps, qk_dim)
    if layout_cls.reduces_keys:
        _refuse_for_reduced_keys(layout_cls, score_cls, pattern_obj, position_cls, causal)
    if position_cls.reweights and score_cls.attend is not Score.attend:
        raise ShapeError(
            f"position '{position_cls.name}' reweights the attention matrix, which score '{score_cls.name}' never forms"
        )
    if adds_bias(position_cls) and not score_cls.takes_bias:
        raise ShapeError(
            f"position '{position_cls.name}' adds a logit bias, which linear score '{score_cls.name}' never forms (use none or rope)"
        )
    if position_cls.uses_geometry:
        position_kw = {**position_kw, "tokens": n, "grid": grid}
    if layout_cls.uses_geometry:
        layout_kw = {**layout_kw, "grid": grid}
    if score_cls.uses_geometry:
        score_kw = {**score_kw, "tokens": n, "grid": grid, "value_dim": head_dim}
    return (n, dim, grid, head_dim, qk_dim, maps, (layout_cls, layout_kw), (score_cls, score_kw), pattern_obj,
            (position_cls, position_kw))


ARGS = {
    "heads": Arg(int, 4, low=1, doc="query heads"),
    "kv_heads": Arg(int, 0, low=0, doc="key/value heads for layout=gqa (0: as many as query heads)"),
    "head_dim": Arg(int, 0, low=0, doc="0: channels // heads"),
    "layout": Arg(dict, {"name": "mha"}, doc="head layout: mha | gqa | mqa | sqa(q) | mla(r) | tpla(r, shards) | moh(k, shared) | ssa(reduction, width)"),
    "score": Arg(dict, {"name": "softmax"}, doc="score function: softmax | sigmoid | ..."),
    "pattern": Arg(dict, {"name": "full"}, doc="mask pattern: full | causal | window(k, d) | neighborhood(k, d) | neighborhood2d(k, d) | block_sparse(b, layout) | axial | axial_row | axial_col | strip(w) | halo(b, h) | circular(r) | shifted_sparse(g, sinks) | landmark(b, k) | token_select(k) | sparsifiner(k, rank, reduce) | routing(c) | combiner(b) | document(docs, seed) | pr_flash(b, decay, seed)"),
    "position": Arg(dict, {"name": "none"}, doc="positions: none | rope | alibi | rope_alibi | urpe | gpsa | positional"),
    "causal": Arg(bool, False, doc="also mask future tokens (sequence order)"),
}


@register_op("attention", family="attention", args=ARGS)
class Attention(Op):
    """Attention with independently chosen head layout, score, pattern and position."""

    def __init__(self, shape: Shape, **args: Any):
        super().__init__()
        args = {**{k: a.default for k, a in ARGS.items()}, **args}
        n, dim, grid, head_dim, qk_dim, maps, layout, score, pattern, position = _resolve(shape, **args)
        self.grid, self.causal = grid, args["causal"]
        self.layout = layout[0](dim, args["heads"], args["kv_heads"], head_dim, **layout[1])
        self.score = score[0].build(maps, qk_dim, **score[1])
        self.pattern = pattern
        pattern.causal = self.causal  # content-based patterns select among visible keys
        self.pattern_module = pattern.module(maps, qk_dim, n)  # learned parts, if any
        self.position = position[0](maps, qk_dim, **position[1])
        self.gate = score[0].input_gate(maps, dim)  # gated attention's per-head gate of the input, if any
        self.value_gate = score[0].value_gate(maps, dim, **score[1])  # reversed attention's child gate, if any
        # selector patterns gather their keys when the score is a plain dot product
        # over weights (Score.logits/attend) and no position needs the dense map
        score_cls = type(self.score)
        self.gathers = (pattern.gathers and score_cls.logits is Score.logits and score_cls.attend is Score.attend
                        and not self.position.reweights)
        # token-compressing patterns (Token Sparse Attention) gather Q/K/V rows under the same condition
        self.compresses = (pattern.compresses and score_cls.logits is Score.logits and score_cls.attend is Score.attend
                           and not self.position.reweights)
        # factorised patterns (Combiner) run their compact softmax when nothing needs the dense logits
        self.factorised = (pattern.factorised and score_cls is Softmax and not self.position.reweights
                           and not adds_bias(position[0]))
        self.scale = 1.0 / math.sqrt(qk_dim)
        self.summary = ", ".join(f"{k}={_show(args[k])}" for k in ARGS)

    @classmethod
    def output_shape(cls, shape: Shape, **args: Any) -> Shape:
        _resolve(shape, **{**{k: a.default for k, a in ARGS.items()}, **args})
        return shape

    @classmethod
    def flops(cls, shape, out, params, /, **args) -> int:
        """Projections (2 * params per token) plus the attention core as the score
        counts it, over the maps the layout computes (SQA fewer, TPLA heads x shards),
        the keys it attends to (SSA's reduced map) and its q/k width. Linear scores
        declare O(n d^2). Projection FLOPs are charged on every token (an upper bound
        for SSA, whose k/v projections see only the reduced map)."""
        args = {**{k: a.default for k, a in ARGS.items()}, **args}
        n, dim, grid = _geometry(shape)
        heads = args["heads"]
        head_dim = args["head_dim"] or dim // heads
        layout_cls, layout_kw = LAYOUTS.resolve(args["layout"])
        score_cls, score_kw = SCORES.resolve(args["score"])
        pattern_cls, pattern_kw = PATTERNS.resolve(args["pattern"])
        keys = min(layout_cls.keys(n, grid, **layout_kw), pattern_cls(**pattern_kw).attended_keys(n))
        core = score_cls.flops(
            n, head_dim, layout_cls.attention_heads(heads, **layout_kw), shape[0],
            keys=keys, qk_dim=layout_cls.qk_dim(head_dim, dim=dim, **layout_kw), **score_kw,
        )
        frozen = shape[0] * layout_cls.frozen_flops(n, dim, heads, head_dim, **layout_kw)
        return 2 * params * shape[0] * n + core + frozen

    def mask(self, n: int, device, q=None, k=None) -> torch.Tensor | None:
        if self.pattern.data_dependent and q is not None:
            mask = self.pattern.mask_for(q, k, self.grid)
        else:
            mask = self.pattern.mask(n, self.grid, device)
        if self.causal:
            causal = torch.ones(n, n, dtype=torch.bool, device=device).tril()
            mask = causal if mask is None else mask & causal
        return mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = x.shape if x.dim() == IMAGE_RANK else None
        if image:
            x = x.flatten(2).transpose(1, 2)
        q, k, v = self.layout.qkv(x)
        k, v = self.layout.expand(k), self.layout.expand(v)
        if self.value_gate is not None:
            v = v * self.value_gate(x)
        q, k = self.position.rotate(q, k, self.grid)
        n = x.shape[1]
        bias = self.position.bias(n, n, x.device)
        if self.gathers and "flash" in type(self.pattern).__dict__:  # a block layout the kernels skip (PrFlash)
            out = self._flash(q, k, v)
            if out is not None:
                return self._finish(out, x, q, k, v, None, bias, image)
        if self.gathers:  # Sparsifiner: attend over the selected keys only
            idx, valid = self.pattern.select(q, k, self.grid)
            out = gathered_attend(self.score, q, k, v, idx, valid, bias, self.scale)
            mask = selection_mask(idx, valid, n) if ANALYSIS_HOOK is not None else None
            return self._finish(out, x, q, k, v, mask, bias, image)
        if self.compresses:  # Token Sparse Attention: compress Q/K/V rows, attend, decompress
            idx, valid = self.pattern.select(q, k)
            out = compressed_attend(self.score, q, k, v, idx, valid, bias, self.scale, self.causal)
            mask = self.mask(n, x.device, q, k) if ANALYSIS_HOOK is not None else None
            return self._finish(out, x, q, k, v, mask, bias, image)
        if self.factorised:  # Combiner: own-block keys plus one summary per other block
            out = self.pattern.attend(q, k, v, self.scale)
            return self._finish(out, x, q, k, v, None, None, image)
        mask = self.mask(n, x.device, q, k)
        pattern_bias = self.pattern.bias_for(q, k, self.grid)  # pattern logits, e.g. Combiner's block summaries
        if pattern_bias is not None:
            bias = pattern_bias if bias is None else bias + pattern_bias
        perturbation = LOGIT_HOOK(self, q, k) if LOGIT_HOOK is not None and self.score.takes_bias else None
        if perturbation is not None:
            bias = perturbation if bias is None else bias + perturbation
        if self.position.reweights:  # URPE, GPSA: post-process the weights the score forms
            from archgram.kernels import fallbacks

            fallbacks.record("flash", f"position {type(self.position).__name__} re-weights the attention matrix")
            logits = self.score.logits(q, k, self.scale)
            if bias is not None:
                logits = logits + bias
            weights = self.position.reweight(self.score.weights(logits, mask), mask, self.grid)
            out = torch.matmul(weights, v)
        else:
            out = self._flash(q, k, v, pattern_bias) if perturbation is None else None
            if out is None:
                out = self.score.attend(q, k, v, mask, bias, self.scale, causal=self.causal)
        if self.pattern.compresses:  # dense form of token compression: unselected queries get no output
            out = out * self.pattern.rows(q, k)
        return self._finish(out, x, q, k, v, mask, bias, image)

    def _finish(self, out, x, q, k, v, mask, bias, image) -> torch.Tensor:
        """Input gate, analysis hook, output projection, and the (B, C, H, W) ``image`` shape back."""
        if self.gate is not None:
            out = out * self.gate(x)
        if ANALYSIS_HOOK is not None:
            out = ANALYSIS_HOOK(self, out, q, k, v, mask, bias)
        y = self.layout.out(out, x)
        if image:
            y = y.transpose(1, 2).reshape(image)
        return y

    def _flash(self, q, k, v, pattern_bias=None) -> torch.Tensor | None:
        """The fused flash kernels' output (forward and backward) where they serve
        this op's score / pattern / position (each part's ``flash`` keywords),
        on CUDA; None otherwise (the PyTorch path runs; the reason is recorded in
        ``archgram.kernels.fallbacks``). ARCHGRAM_KERNELS=off disables."""
        from archgram.kernels import fallbacks
        from archgram.kernels.flash import dispatch

        reason = dispatch.unavailable(q, k, v)  # before building kernel arguments: runs on every CPU step
        if reason is None and pattern_bias is not None:
            reason = f"pattern {type(self.pattern).__name__} adds data-dependent logits"
        kw = None
        if reason is None:
            parts = {"score": self.score, "pattern": self.pattern, "position": self.position}
            kw, reason = kernel_keywords(parts, q.shape[-2], getattr(self, "grid", None), q.device)
        if kw is None:
            fallbacks.record("flash", reason)
            return None
        kw["scale"] = self.scale
        if self.causal:
            kw["causal"] = True
        return dispatch.attention(q, self.layout.unexpanded(k), self.layout.unexpanded(v), **kw)

    def extra_repr(self) -> str:
        return self.summary


def _show(value: Any) -> str:
    if isinstance(value, dict):
        params = [str(v) for k, v in value.items() if k != "name"]
        return value["name"] + (f"({', '.join(params)})" if params else "")
    return str(value)
