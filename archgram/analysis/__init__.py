"""Analysis of trained models' attention (catalog row S69): which heads matter
(ablation, Michel et al. 2019), how far each head looks (mean attention
distance, as in ViT), attention-map images and an HTML report.

``capture`` (the opt-in hook of the composite attention op), ``distance``,
``importance``, ``plots``, ``report``, ``source`` (model from a study trial, a
derivation or an export); ``archgram analyze`` drives them.

S69 (Li et al. 2023, "How does attention work in vision transformers? A visual
analytics attempt"). Paper: three analyses behind an interactive system --
head importance by pruning heads, each head's attention strength against
spatial distance, and a summary of the attention patterns that image patches
receive, learned with an autoencoder and browsed interactively.
What archgram does: head importance by ablation (validation loss and metric
with one head masked), per-head mean attention distance and the attention
strength at each distance (``capture.strength``), an autoencoder summary of
every query's attention pattern per layer (``patterns.summarize``: 2-D codes,
plotted by head), attention-map images and an HTML report, for any compiled
model with composite attention ops, sequences (token distance) or images
(pixel distance).
The interactive system is ``explore.html`` (explore.py): linked views of head
importance, strength by distance, the pattern codes and each query's attention,
all redrawn from one selection, written unattended with the report.
What differs: the autoencoder's codes are 2-D directly rather than projected
from a wider latent; the page shows the first validation example's maps.
"""
from archgram.analysis.capture import AnalysisError, NoAttentionError, attention_layers, capture

__all__ = ["AnalysisError", "NoAttentionError", "attention_layers", "capture"]

#: Catalog rows this package implements (read by archgram.catalog).
CATALOG_REFS = {"tool:analyze": ("S69",), "tool:experts": ("S53",), "tool:icl_heads": ("S18",)}
