"""When KV-cache decoding uses the split-KV kernel: CUDA tensors, supported
dtype / head dim / group size, no gradients needed (forward only),
``ARCHGRAM_KERNELS`` not off. Returns None otherwise (the caller runs its
PyTorch path)."""
from __future__ import annotations

import torch

from archgram.kernels.flash.dispatch import enabled


def on_device(*tensors) -> bool:
    """CUDA only (tests patch this to accept the CPU under TRITON_INTERPRET=1)."""
    return all(t.is_cuda for t in tensors)


def attention(q, k, v, lengths=None, *, scale: float | None = None) -> torch.Tensor | None:
    """The kernel's output (B, H, Nq, D), or None where it does not apply."""
    if not enabled() or not on_device(q, k, v):
        return None
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return None
    from archgram.kernels.decode.split import check_inputs, decode_attention

    try:
        check_inputs(q, k, v, lengths)
    except ValueError:
        return None
    return decode_attention(q, k, v, lengths, scale=scale)
