"""``flash_attention``: the forward and backward kernels as one differentiable
torch op (gradients for q, k and v; ALiBi slopes and the block mask are
constants)."""
from __future__ import annotations

import torch

from archgram.kernels.flash.backward import backward
from archgram.kernels.flash.forward import check_inputs, forward
from archgram.kernels.flash.spec import make_spec


class FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, spec, alibi_slopes):
        out, lse, aux = forward(q, k, v, spec, alibi_slopes)
        ctx.save_for_backward(q, k, v, out, lse, aux)
        ctx.spec, ctx.alibi_slopes = spec, alibi_slopes
        return out

    @staticmethod
    def backward(ctx, do):
        q, k, v, out, lse, aux = ctx.saved_tensors
        dq, dk, dv = backward(do, q, k, v, out, lse, aux, ctx.spec, ctx.alibi_slopes)
        return dq, dk, dv, None, None


def flash_attention(q, k, v, *, alibi_slopes: torch.Tensor | None = None, **kw) -> torch.Tensor:
    """Differentiable fused attention, (B, H, Nq, D) in q's dtype. q (B, H, Nq, D);
    k, v (B, Hkv, Nk, D) with Hkv dividing H (GQA/MQA: dK, dV summed over each
    group). Keywords: ``archgram.kernels.flash.spec.Spec`` (score, causal,
    window, dilation, neighborhood, block_mask + block, scale, sigmoid_bias,
    cap, power, gamma, zeta)."""
    check_inputs(q, k, v)
    spec = make_spec(q.shape[2], k.shape[2], **kw)
    if alibi_slopes is not None:
        alibi_slopes = alibi_slopes.detach()
    return FlashAttention.apply(q, k, v, spec, alibi_slopes)
