"""The evaluator honours ops' training hooks: auxiliary losses and curricula."""
from __future__ import annotations

import pytest
import torch

from archgram.grammar.model import Grammar
from archgram.ops.registry import get_op
from archgram.search.evaluator import auxiliary_loss, evaluate


@pytest.mark.catalog("S53")
def test_auxiliary_loss_counts_each_moe_balance_loss_once():
    spec = get_op("moe")
    model = torch.nn.Sequential(spec.build((2, 6, 8), spec.bind({"experts": 4, "k": 1})))
    model(torch.randn(2, 6, 8))
    inner = [m for m in model.modules() if "aux_loss" in m.__dict__]
    assert len(inner) == 1  # the wrapper's property is not a second copy
    torch.testing.assert_close(auxiliary_loss(model), inner[0].aux_loss)
    assert auxiliary_loss(model).requires_grad


@pytest.mark.catalog("S08")
def test_training_advances_the_progressive_masking_curriculum(monkeypatch):
    cls = get_op("progressive_mask_attention").cls
    seen: list[tuple[int, int]] = []
    original = cls.set_progress

    def record(self, step, total):
        seen.append((step, total))
        return original(self, step, total)

    monkeypatch.setattr(cls, "set_progress", record)
    g = Grammar.from_text("net : conv2d(out=8, k=3) progressive_mask_attention relu\n")
    d = g.sample((16, 1, 8, 8), seed=0)
    result = evaluate(d, "digits", "12steps", seed=0, train_options={"threads": 1})
    assert result.status == "ok", result.message
    assert len(seen) == 12 and seen[0][0] < seen[-1][0]  # called every step, progress grows
