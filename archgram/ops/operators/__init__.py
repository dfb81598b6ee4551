"""Neural-operator layers: resolution-agnostic maps between function spaces
(spectral convolution, integral kernel, differential and local integral kernels,
S02; multigrid V-cycle operator, S01)."""
from archgram.ops.operators import integral, local, multigrid, spectral  # noqa: F401  (registers the ops)
from archgram.ops.operators.integral import IntegralKernel
from archgram.ops.operators.local import DifferentialKernel, LocalIntegralKernel
from archgram.ops.operators.multigrid import MultigridOperator
from archgram.ops.operators.spectral import SpectralConv

__all__ = ["DifferentialKernel", "IntegralKernel", "LocalIntegralKernel", "MultigridOperator", "SpectralConv"]
