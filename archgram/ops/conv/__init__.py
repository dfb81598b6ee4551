"""Standard convolution family beyond einspace's conv2d: depthwise 2D and 1D
(sequence) convolution. Importing the package registers every module's ops."""
from archgram.registry import import_submodules

import_submodules(__name__)
