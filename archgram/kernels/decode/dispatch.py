"""When KV-cache decoding uses the Lean Attention (stream-K) kernel: CUDA tensors, supported
dtype / head dim / group size, no gradients needed (forward only),
``ARCHGRAM_KERNELS`` not off. Returns None otherwise (the caller runs its
PyTorch path; the reason is recorded in ``archgram.kernels.fallbacks``)."""
from __future__ import annotations

import torch

from archgram.kernels.fallbacks import enabled, record


def on_device(*tensors) -> bool:
    """CUDA only (tests patch this to accept the CPU under TRITON_INTERPRET=1)."""
    return all(t.is_cuda for t in tensors)


def why_not(q, k, v, lengths=None) -> str | None:
    """Why the decode kernel does not serve this call, or None when it does."""
    from archgram.kernels.decode.split import check_inputs

    if not enabled():
        return "ARCHGRAM_KERNELS=off"
    if not on_device(q, k, v):
        return f"tensors on {q.device.type}; the kernels run on CUDA"
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return "the decode kernel has no backward and gradients are needed"
    try:
        check_inputs(q, k, v, lengths)
    except ValueError as e:
        return str(e)
    return None


def attention(q, k, v, lengths=None, *, scale: float | None = None) -> torch.Tensor | None:
    """The kernel's output (B, H, Nq, D), or None where it does not apply (the reason recorded)."""
    reason = why_not(q, k, v, lengths)
    if reason is not None:
        record("decode", reason)
        return None
    from archgram.kernels.decode.lean import lean_attention

    return lean_attention(q, k, v, lengths, scale=scale)
