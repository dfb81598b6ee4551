"""When to use the flash kernels: ``attention`` returns the differentiable
kernel's output (``flash_attention``: forward and backward kernels, so
training uses them too) for a supported configuration on CUDA, else None (the
caller runs its reference / PyTorch path). ``ARCHGRAM_KERNELS=off`` always
returns None.
"""
from __future__ import annotations

import os

import torch

from archgram.kernels.flash.spec import FlashArgumentError, make_spec


def enabled() -> bool:
    return os.environ.get("ARCHGRAM_KERNELS", "on").lower() not in ("off", "0", "false", "no")


def on_device(*tensors) -> bool:
    """Whether the kernel can run on these tensors' device (CUDA; tests patch this
    to accept the CPU under TRITON_INTERPRET=1)."""
    return all(t.is_cuda for t in tensors)


def supported(q, k, v, **kw) -> bool:
    """Whether the kernels serve these tensors and keywords (device, dtype,
    shapes, head dim, score and mask)."""
    from archgram.kernels.flash.forward import check_inputs

    if not enabled() or not on_device(q, k, v):
        return False
    try:
        check_inputs(q, k, v)
        make_spec(q.shape[2], k.shape[2], **kw)
    except FlashArgumentError:
        return False
    return True


def attention(q, k, v, *, alibi_slopes: torch.Tensor | None = None, rel_bias: torch.Tensor | None = None,
              **kw) -> torch.Tensor | None:
    """The kernel's output (B, H, Nq, D), or None where the kernel does not apply.

    q (B, H, Nq, D), k/v (B, Hkv, Nk, D); keywords as
    ``archgram.kernels.flash.spec.Spec``, math as ``reference.attention``."""
    if not supported(q, k, v, **kw):
        return None
    from archgram.kernels.flash.autograd import flash_attention

    return flash_attention(q, k, v, alibi_slopes=alibi_slopes, rel_bias=rel_bias, **kw)
