"""Neural-operator layers: resolution-agnostic maps between function spaces
(spectral convolution, S02; multigrid V-cycle operator, S01)."""
from archgram.ops.operators import multigrid, spectral  # noqa: F401  (registers the ops)
from archgram.ops.operators.multigrid import MultigridOperator
from archgram.ops.operators.spectral import SpectralConv

__all__ = ["MultigridOperator", "SpectralConv"]
