"""When the attention op's linear scores use the chunked kernel: causal (or the
two passes of the decayed bidirectional form), CUDA tensors, a supported
dtype and key dim, ``ARCHGRAM_KERNELS`` not off. Returns None otherwise and
the caller runs its PyTorch path; the reason is recorded in
``archgram.kernels.fallbacks``). Gradients flow (the kernel has a backward)."""
from __future__ import annotations

import torch

from archgram.kernels.fallbacks import enabled, record


def on_device(*tensors) -> bool:
    """Whether the kernel can run on these tensors' device (CUDA; tests patch this
    to accept the CPU under TRITON_INTERPRET=1)."""
    return all(t.is_cuda for t in tensors)


def _unavailable(*tensors) -> str | None:
    if not enabled():
        return "ARCHGRAM_KERNELS=off"
    if not on_device(*tensors):
        return f"tensors on {tensors[0].device.type}; the kernels run on CUDA"
    return None


def _dtype_and_dim(fq, fk, v) -> str | None:
    from archgram.kernels.linear.chunk import DTYPES, MAX_KEY_DIM

    if fq.dtype not in DTYPES or not (fq.dtype == fk.dtype == v.dtype):
        return f"dtypes {fq.dtype}, {fk.dtype}, {v.dtype}: need one of {DTYPES}, all equal"
    if fq.shape[-1] > MAX_KEY_DIM:
        return f"key dim {fq.shape[-1]} > {MAX_KEY_DIM}"
    return None


def why_not(fq, fk, v) -> str | None:
    """Why the chunked kernel does not serve these tensors, or None when it does."""
    reason = _unavailable(fq, fk, v)
    if reason is None and (fq.dim() != 4 or fk.shape != fq.shape or v.dim() != 4 or v.shape[:3] != fq.shape[:3]):
        reason = f"shapes {tuple(fq.shape)}, {tuple(fk.shape)}, {tuple(v.shape)}: need (B, H, N, Dk) twice, (B, H, N, Dv)"
    return reason or _dtype_and_dim(fq, fk, v)


def supported(fq, fk, v) -> bool:
    return why_not(fq, fk, v) is None


def causal(fq, fk, v, decay: torch.Tensor | None = None) -> torch.Tensor | None:
    """sum_{j <= i} lambda_h^(i-j) (fq_i . fk_j) v_j via the kernel, or None (the
    reason recorded). ``decay`` is the op's per-head lambda in (0, 1] (H,), or None."""
    reason = why_not(fq, fk, v)
    if reason is not None:
        record("linear", reason)
        return None
    from archgram.kernels.linear.chunk import linear_attention

    log_decay = None if decay is None else torch.log(decay.to(device=fq.device, dtype=torch.float32))
    return linear_attention(fq, fk, v, log_decay=log_decay)


def _step_why_not(state, fq_t, fk_t, v_t) -> str | None:
    tensors = (fq_t, fk_t, v_t) + (() if state is None else (state,))
    reason = _unavailable(*tensors)
    if reason is None and torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        reason = "the recurrent step has no backward and gradients are needed"
    if reason is None and (fq_t.dim() != 3 or fk_t.shape != fq_t.shape or v_t.shape[:2] != fq_t.shape[:2]):
        reason = f"step shapes {tuple(fq_t.shape)}, {tuple(fk_t.shape)}, {tuple(v_t.shape)}"
    if reason is None and state is not None and state.shape != (*fq_t.shape, v_t.shape[-1]):
        reason = f"state {tuple(state.shape)} does not match the step's {(*fq_t.shape, v_t.shape[-1])}"
    return reason or _dtype_and_dim(fq_t, fk_t, v_t)


def step(state, fq_t, fk_t, v_t, decay: torch.Tensor | None = None):
    """One decoding token through the fused recurrent kernel: (out_t, new state),
    or None (no CUDA, gradients needed, unsupported shapes; the reason recorded).
    The new state is a fresh float32 tensor: the caller's old state is left untouched."""
    reason = _step_why_not(state, fq_t, fk_t, v_t)
    if reason is not None:
        record("linear", reason)
        return None
    from archgram.kernels.linear.recurrent import recurrent_step

    state = None if state is None else state.float().clone()
    log_decay = None if decay is None else torch.log(decay.to(device=fq_t.device, dtype=torch.float32))
    return recurrent_step(state, fq_t, fk_t, v_t, log_decay=log_decay)
