"""Vision attention modules from the catalog (family 'vision'): gating and local
attentions that plug into convolutional stages (coordinate, polarized, outlook,
channel-group attention, ...). Importing this package registers them."""
from archgram.ops.vision import (  # noqa: F401  (registers the ops)
    bvr,
    channel,
    coord,
    csa,
    fbl_fusion,
    fbl_memory,
    i2correlation,
    oat,
    outlook,
    polarized,
    progressive_mask,
    tcpa,
)
