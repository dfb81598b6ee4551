"""Mixture-of-experts ops: routed FFN experts (Switch/GShard; tunable, S53) and
BAM's mixture of attention and FFN experts upcycled from a dense block (S10)."""
from archgram.ops.moe import bam, routed  # noqa: F401  (registers the ops)
from archgram.ops.moe.bam import BAMBlock, DenseParallelBlock, upcycle
from archgram.ops.moe.routed import FFN, MoE, RoutedMoE, balance_loss

__all__ = ["BAMBlock", "DenseParallelBlock", "FFN", "MoE", "RoutedMoE", "balance_loss", "upcycle"]
