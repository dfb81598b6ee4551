"""Standard convolution family beyond einspace's conv2d: depthwise 2D and 1D (sequence) convolution."""
from archgram.ops.conv import basic  # noqa: F401  (registers the ops)
