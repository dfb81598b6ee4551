"""Flash attention: ``reference`` (naive math), ``forward`` / ``backward``
(Triton), ``flash_attention`` (differentiable), ``dispatch`` (when the op uses
the kernels). Kernel modules import lazily, so importing this package does not
compile or touch Triton."""


def flash_attention(q, k, v, **kw):
    """Differentiable fused attention; see ``archgram.kernels.flash.autograd.flash_attention``."""
    from archgram.kernels.flash.autograd import flash_attention as run

    return run(q, k, v, **kw)
