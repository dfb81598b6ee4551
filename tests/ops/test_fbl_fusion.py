"""FBLNet's knowledge-guided fusion (catalog S33): a CNN and a Transformer feature
mixed by weights the incremental knowledge sets, the knowledge rewritten from each
fusion and accumulated across inputs in training."""
from __future__ import annotations

import pytest
import torch

from archgram.errors import ShapeError
from archgram.ops.registry import get_op

SPEC = get_op("fbl_fusion")
pytestmark = pytest.mark.catalog("S33")


def build(shape, **args):
    torch.manual_seed(0)
    return SPEC.build([shape, shape], SPEC.bind(args)).eval()


def test_fbl_fusion_matches_its_knowledge_gated_feedback_loop():
    """Each round: the gate reads the knowledge for both features, fuses them, and
    the knowledge is rewritten from the fused feature (formula by hand)."""
    c, t = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    m = build((2, 5, 4), slots=3, iterations=3)
    mem = m.memory
    with torch.no_grad():
        mem.knowledge.copy_(torch.randn(3, 4))
        mem.gate.fill_(0.4)
    w = torch.sigmoid(torch.tensor(0.4))
    for b in range(2):
        k = mem.knowledge.clone()
        for _ in range(3):
            reads = [mem.o(torch.softmax(mem.q(z) @ mem.k(k).T / 2, -1) @ mem.v(k)) for z in (c[b], t[b])]
            g = torch.sigmoid(torch.cat(reads, -1) @ m.gate.weight.T + m.gate.bias)
            f = g * c[b] + (1 - g) * t[b]
            k = (1 - w) * k + w * (torch.softmax(mem.slot_queries @ f.T / 2, -1) @ f)
        torch.testing.assert_close(m([c, t])[b], f)


def test_fusion_weights_are_set_by_the_knowledge_and_accumulate_only_in_training():
    c, t = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    m = build(tuple(c.shape), momentum=0.5)
    y0 = m([c, t])
    lo, hi = torch.minimum(c, t), torch.maximum(c, t)
    assert ((y0 >= lo - 1e-6) & (y0 <= hi + 1e-6)).all()  # a per-element convex mix of the two features
    assert not torch.allclose(y0, c) and not torch.allclose(y0, t)
    torch.testing.assert_close(m([c, t]), y0)  # eval: the knowledge is read only
    assert torch.count_nonzero(m.memory.knowledge) == 0
    with torch.no_grad():  # other knowledge, same features: another fusion
        m.memory.knowledge.copy_(torch.randn_like(m.memory.knowledge) * 3)
    assert not torch.allclose(m([c, t]), y0)
    with torch.no_grad():
        m.memory.knowledge.zero_()
    m.train()
    m([torch.randn_like(c), torch.randn_like(t)])  # experience from other inputs ...
    assert m.memory.knowledge.abs().sum() > 0
    m.eval()
    assert not torch.allclose(m([c, t]), y0)  # ... changes how this input is fused


def test_fbl_fusion_needs_two_features_of_one_shape():
    rule = SPEC.cls.output_shape
    with pytest.raises(ShapeError, match="fbl_fusion"):
        rule([(2, 4, 3, 3), (2, 4, 3, 2)])
    with pytest.raises(ShapeError, match="2 branches"):
        rule([(2, 5, 4)] * 3)
    assert SPEC.cls.branch_target([(2, 4, 3, 3)]) == (2, 4, 3, 3)
