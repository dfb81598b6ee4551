"""Fused Triton kernels with a plain-PyTorch reference beside each.

``flash/``: flash-style attention (score function, mask and head mapping as
compile-time options). Kernels run on CUDA; on the CPU (tests) under
``TRITON_INTERPRET=1``. ``ARCHGRAM_KERNELS=off`` forces the reference;
``ARCHGRAM_KERNELS=explain`` logs why a call did not run a kernel
(``fallbacks``: every dispatcher records its reason there).
"""
