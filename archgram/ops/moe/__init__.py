"""Mixture-of-experts ops: routed FFN experts (Switch/GShard; tunable, S53) and
BAM's mixture of attention and FFN experts upcycled from a dense block (S10).
Importing the package registers every module's ops."""
from archgram.ops.moe.bam import BAMBlock, DenseParallelBlock, upcycle
from archgram.ops.moe.routed import FFN, MoE, RoutedMoE, balance_loss
from archgram.registry import import_submodules

import_submodules(__name__)

__all__ = ["BAMBlock", "DenseParallelBlock", "FFN", "MoE", "RoutedMoE", "balance_loss", "upcycle"]
