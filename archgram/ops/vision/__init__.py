"""Vision attention modules from the catalog (family 'vision'): gating and local
attentions that plug into convolutional stages (coordinate, polarized, outlook,
channel-group attention, ...). Importing the package registers every
module's ops: a new op is one new module."""
from archgram.registry import import_submodules

import_submodules(__name__)
