"""``flash_attention``: the forward and backward kernels as one differentiable
torch op (gradients for q, k, v and the relative bias table; ALiBi slopes
and the block mask are constants)."""
from __future__ import annotations

import torch

from archgram.kernels.flash.backward import backward
from archgram.kernels.flash.forward import check_inputs, check_rel_bias, forward
from archgram.kernels.flash.spec import make_spec


class FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, spec, alibi_slopes, rel_bias):
        out, lse, aux = forward(q, k, v, spec, alibi_slopes, rel_bias=rel_bias)
        ctx.save_for_backward(q, k, v, out, lse, aux, rel_bias)
        ctx.spec, ctx.alibi_slopes = spec, alibi_slopes
        return out

    @staticmethod
    def backward(ctx, do):
        q, k, v, out, lse, aux, rel_bias = ctx.saved_tensors
        dq, dk, dv, drel = backward(do, q, k, v, out, lse, aux, ctx.spec, ctx.alibi_slopes, rel_bias=rel_bias)
        return dq, dk, dv, None, None, drel


def flash_attention(q, k, v, *, alibi_slopes: torch.Tensor | None = None, rel_bias: torch.Tensor | None = None,
                    **kw) -> torch.Tensor:
    """Differentiable fused attention, (B, H, Nq, D) in q's dtype. q (B, H, Nq, D);
    k, v (B, Hkv, Nk, D) with Hkv dividing H (GQA/MQA: dK, dV summed over each
    group). Keywords: ``archgram.kernels.flash.spec.Spec`` (score, causal,
    window, dilation, neighborhood, grid, block_mask + block, scale, sigmoid_bias,
    cap, power, gamma, zeta). ``rel_bias`` (H, 2R + 1): a learned per-head
    logit bias rel_bias[h, clip(j - i, -R, R) + R], with its gradient."""
    check_inputs(q, k, v)
    check_rel_bias(rel_bias, q.shape[1])
    spec = make_spec(q.shape[2], k.shape[2], **kw)
    if alibi_slopes is not None:
        alibi_slopes = alibi_slopes.detach()
    return FlashAttention.apply(q, k, v, spec, alibi_slopes, rel_bias)
