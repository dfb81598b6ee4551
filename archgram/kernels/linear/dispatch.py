"""When the attention op's linear scores use the chunked kernel: causal (or the
two passes of the decayed bidirectional form), CUDA tensors, a supported
dtype and key dim, ``ARCHGRAM_KERNELS`` not off. Returns None otherwise and
the caller runs its PyTorch path. Gradients flow (the kernel has a backward)."""
from __future__ import annotations

import torch

from archgram.kernels.flash.dispatch import enabled


def on_device(*tensors) -> bool:
    """Whether the kernel can run on these tensors' device (CUDA; tests patch this
    to accept the CPU under TRITON_INTERPRET=1)."""
    return all(t.is_cuda for t in tensors)


def supported(fq, fk, v) -> bool:
    from archgram.kernels.linear.chunk import DTYPES, MAX_KEY_DIM

    if not enabled() or not on_device(fq, fk, v):
        return False
    if fq.dim() != 4 or fk.shape != fq.shape or v.dim() != 4 or v.shape[:3] != fq.shape[:3]:
        return False
    return fq.dtype in DTYPES and fq.dtype == fk.dtype == v.dtype and fq.shape[-1] <= MAX_KEY_DIM


def causal(fq, fk, v, decay: torch.Tensor | None = None) -> torch.Tensor | None:
    """sum_{j <= i} lambda_h^(i-j) (fq_i . fk_j) v_j via the kernel, or None.
    ``decay`` is the op's per-head lambda in (0, 1] (H,), or None."""
    if not supported(fq, fk, v):
        return None
    from archgram.kernels.linear.chunk import linear_attention

    log_decay = None if decay is None else torch.log(decay.to(device=fq.device, dtype=torch.float32))
    return linear_attention(fq, fk, v, log_decay=log_decay)


def step(state, fq_t, fk_t, v_t, decay: torch.Tensor | None = None):
    """One decoding token through the fused recurrent kernel: (out_t, new state),
    or None (no CUDA, gradients needed, unsupported shapes). The new state is a
    fresh float32 tensor: the caller's old state is left untouched."""
    tensors = (fq_t, fk_t, v_t) + (() if state is None else (state,))
    if not enabled() or not on_device(*tensors):
        return None
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return None
    from archgram.kernels.linear.chunk import DTYPES, MAX_KEY_DIM
    from archgram.kernels.linear.recurrent import recurrent_step

    if fq_t.dim() != 3 or fk_t.shape != fq_t.shape or v_t.shape[:2] != fq_t.shape[:2]:
        return None
    if fq_t.dtype not in DTYPES or not (fq_t.dtype == fk_t.dtype == v_t.dtype) or fq_t.shape[-1] > MAX_KEY_DIM:
        return None
    if state is not None and state.shape != (*fq_t.shape, v_t.shape[-1]):
        return None
    state = None if state is None else state.float().clone()
    log_decay = None if decay is None else torch.log(decay.to(device=fq_t.device, dtype=torch.float32))
    return recurrent_step(state, fq_t, fk_t, v_t, log_decay=log_decay)
