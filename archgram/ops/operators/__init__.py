"""Neural-operator layers: resolution-agnostic maps between function spaces
(spectral convolution, integral kernel, differential and local integral kernels,
S02; multigrid V-cycle operator, S01). Importing the package registers every module's ops."""
from archgram.ops.operators.integral import IntegralKernel
from archgram.ops.operators.local import DifferentialKernel, LocalIntegralKernel
from archgram.ops.operators.multigrid import MultigridOperator
from archgram.ops.operators.spectral import SpectralConv
from archgram.registry import import_submodules

import_submodules(__name__)

__all__ = ["DifferentialKernel", "IntegralKernel", "LocalIntegralKernel", "MultigridOperator", "SpectralConv"]
