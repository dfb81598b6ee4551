"""The shipped sequence grammar: every sample is a residual network at one width that
compiles and runs on the sequence tasks it is meant for (mnist1d, mqar, sort)."""
from __future__ import annotations

import pytest
import torch

import archgram
from archgram.grammar.derivation import OpNode, walk


@pytest.mark.parametrize("shape", [(4, 40, 1), (4, 64, 32), (4, 10, 1)], ids=["mnist1d", "mqar", "sort"])
def test_every_sample_runs_and_keeps_one_width(shape):
    g = archgram.load_grammar("sequence")
    for seed in range(8):
        d = g.sample(shape, seed=seed)
        widths = {n.args["out"] for n in walk(d.root) if isinstance(n, OpNode) and n.op == "conv1d"}
        assert len(widths) == 1 and widths <= {32, 64, 128}  # `global width`: one width per network
        y = archgram.compile(d, shape)(torch.randn(shape))
        assert y.shape == (*shape[:2], widths.pop()) and torch.isfinite(y).all()
