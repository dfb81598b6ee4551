"""When to use the flash kernels: ``attention`` returns the differentiable
kernel's output (``flash_attention``: forward and backward kernels, so
training uses them too) for a supported configuration on CUDA, else None (the
caller runs its reference / PyTorch path) and records why
(``archgram.kernels.fallbacks``). ``ARCHGRAM_KERNELS=off`` always returns None.
"""
from __future__ import annotations

import torch

from archgram.kernels.fallbacks import enabled, record
from archgram.kernels.flash.spec import FlashArgumentError, make_spec

__all__ = ["attention", "enabled", "on_device", "supported", "unavailable", "why_not"]


def on_device(*tensors) -> bool:
    """Whether the kernel can run on these tensors' device (CUDA; tests patch this
    to accept the CPU under TRITON_INTERPRET=1)."""
    return all(t.is_cuda for t in tensors)


def unavailable(*tensors) -> str | None:
    """Why no kernel can run here at all (disabled, not on CUDA), or None. Cheap:
    callers ask it before building kernel arguments on every step."""
    if not enabled():
        return "ARCHGRAM_KERNELS=off"
    if not on_device(*tensors):
        return f"tensors on {tensors[0].device.type}; the kernels run on CUDA"
    return None


def why_not(q, k, v, **kw) -> str | None:
    """Why the kernels do not serve these tensors and keywords (device, dtype,
    shapes, head dim, score and mask), or None when they do."""
    from archgram.kernels.flash.forward import check_inputs

    reason = unavailable(q, k, v)
    if reason is not None:
        return reason
    try:
        check_inputs(q, k, v)
        make_spec(q.shape[2], k.shape[2], **kw)
    except FlashArgumentError as e:
        return str(e).removeprefix("flash attention: ")
    return None


def supported(q, k, v, **kw) -> bool:
    """Whether the kernels serve these tensors and keywords."""
    return why_not(q, k, v, **kw) is None


def attention(q, k, v, *, alibi_slopes: torch.Tensor | None = None, rel_bias: torch.Tensor | None = None,
              **kw) -> torch.Tensor | None:
    """The kernel's output (B, H, Nq, D), or None where the kernel does not apply
    (the reason recorded: ``archgram.kernels.fallbacks``).

    q (B, H, Nq, D), k/v (B, Hkv, Nk, D); keywords as
    ``archgram.kernels.flash.spec.Spec``, math as ``reference.attention``."""
    reason = why_not(q, k, v, **kw)
    if reason is not None:
        record("flash", reason)
        return None
    from archgram.kernels.flash.autograd import flash_attention

    return flash_attention(q, k, v, alibi_slopes=alibi_slopes, rel_bias=rel_bias, **kw)
