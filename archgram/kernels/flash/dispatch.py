"""When to use the flash kernel: ``attention`` returns the kernel's output for a
supported configuration on CUDA, else None (the caller runs its reference /
PyTorch path).

Forward only: there is no backward kernel yet, so whenever autograd would
record the call (grad enabled and any input requires grad) this returns None
and training runs through PyTorch. ``ARCHGRAM_KERNELS=off`` always returns None.
"""
from __future__ import annotations

import os

import torch

from archgram.kernels.flash.reference import SCORES


def enabled() -> bool:
    return os.environ.get("ARCHGRAM_KERNELS", "on").lower() not in ("off", "0", "false", "no")


def on_device(*tensors) -> bool:
    """Whether the kernel can run on these tensors' device (CUDA; tests patch this
    to accept the CPU under TRITON_INTERPRET=1)."""
    return all(t.is_cuda for t in tensors)


def supported(q, k, v, score: str) -> bool:
    """Whether the forward kernel serves these tensors and score (device, dtype,
    shapes, head dim, autograd)."""
    from archgram.kernels.flash.forward import DTYPES, HEAD_DIMS

    if score not in SCORES or not enabled():
        return False
    if not on_device(q, k, v):
        return False
    if q.dim() != 4 or k.dim() != 4 or k.shape != v.shape:
        return False
    if q.dtype not in DTYPES or not (q.dtype == k.dtype == v.dtype):
        return False
    if q.shape[-1] not in HEAD_DIMS or k.shape[-1] != q.shape[-1] or q.shape[0] != k.shape[0]:
        return False
    if q.shape[1] % k.shape[1]:
        return False
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return False  # no backward kernel yet
    return True


def attention(q, k, v, *, score: str = "softmax", causal: bool = False, window: int | None = None,
              alibi_slopes: torch.Tensor | None = None, scale: float | None = None,
              sigmoid_bias: float | None = None, cap: float = 50.0) -> torch.Tensor | None:
    """The kernel's output (B, H, Nq, D), or None where the kernel does not apply.

    q (B, H, Nq, D), k/v (B, Hkv, Nk, D); see ``reference.attention`` for the math."""
    if not supported(q, k, v, score):
        return None
    from archgram.kernels.flash.forward import flash_forward

    out, _ = flash_forward(q, k, v, score=score, causal=causal, window=window, alibi_slopes=alibi_slopes,
                           scale=scale, sigmoid_bias=sigmoid_bias, cap=cap)
    return out
