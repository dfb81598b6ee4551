"""Token mixers and MetaFormer-style blocks: MLP-Mixer, PoolFormer, gated CNN (MambaOut),
GLU blocks (Activator), NiNformer, focal modulation, MetaMixer, Orchid, HyperZ.Z.W,
ContMix (OverLoCK) and the causal Grassmann layer.

Blocks (mlp_mixer, poolformer, gated_cnn, glu_block, ninformer) carry their own norms and
residuals; the others are bare token mixers meant for ``clone(2) norm <mixer> identity add``.
Importing the package registers every module's ops: a new op is one new module.
"""
from archgram.registry import import_submodules

import_submodules(__name__)
