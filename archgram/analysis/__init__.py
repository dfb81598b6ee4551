"""Analysis of trained models' attention (catalog row S69): which heads matter
(ablation, Michel et al. 2019), how far each head looks (mean attention
distance, as in ViT), attention-map images and an HTML report.

``capture`` (the opt-in hook of the composite attention op), ``distance``,
``importance``, ``plots``, ``report``, ``source`` (model from a study trial, a
derivation or an export); ``archgram analyze`` drives them.
"""
from archgram.analysis.capture import AnalysisError, NoAttentionError, attention_layers, capture

__all__ = ["AnalysisError", "NoAttentionError", "attention_layers", "capture"]

#: Catalog rows this package implements (read by archgram.catalog).
CATALOG_REFS = {"tool:analyze": ("S69",), "tool:experts": ("S53",), "tool:icl_heads": ("S18",)}
