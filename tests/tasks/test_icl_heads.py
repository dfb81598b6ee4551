"""In-context linear regression with multi-head softmax attention (S18): the head
patterns the paper reports, measured by archgram.analysis.icl_heads, and the
debiased gradient-descent predictor they implement."""
from __future__ import annotations

import pytest
import torch

from archgram.analysis.icl_heads import head_patterns
from archgram.ops import get_op
from archgram.tasks import get_task
from archgram.tasks.icl_regression import debiased_gd

pytestmark = pytest.mark.catalog("S18")


def test_opposite_kq_heads_with_zero_sum_ov_implement_debiased_gradient_descent():
    """mu [softmax(omega s) . y - softmax(-omega s) . y] / (2 mu omega) -> debiased GD as omega -> 0;
    one head alone keeps the normaliser's bias, mean(y) / omega, and is far from it."""
    g = torch.Generator().manual_seed(0)
    X, Xq = torch.randn(4, 16, 8, generator=g, dtype=torch.float64), torch.randn(4, 3, 8, generator=g, dtype=torch.float64)
    y = X @ torch.randn(4, 8, 1, generator=g, dtype=torch.float64) / 8**0.5
    y = y.squeeze(-1)
    s = Xq @ X.transpose(1, 2)
    omega, mu = 1e-3, 0.7
    two_heads = mu * ((omega * s).softmax(-1) @ y[..., None] - (-omega * s).softmax(-1) @ y[..., None]).squeeze(-1)
    gd = debiased_gd(X, y, Xq)
    torch.testing.assert_close(two_heads / (2 * mu * omega), gd, rtol=1e-2, atol=1e-4)
    one_head = mu * ((omega * s).softmax(-1) @ y[..., None]).squeeze(-1)
    assert (one_head / (mu * omega) - gd).abs().max() > 10 * gd.abs().max()


def test_debiased_gd_reference_sits_between_predicting_zero_and_least_squares():
    ref = get_task("icl-regression", n_train=8, n_val=500).reference(0)
    assert ref["zero"] < ref["debiased_gd"] < ref["least_squares"]


def test_head_patterns_find_diagonal_kq_and_zero_sum_label_ov_only_where_they_are():
    """A layer built with the paper's patterns (KQ = +-omega I on the covariates, OV reading only
    the label, +mu / -mu) scores ~1 / ~1 / ~0; a random layer does not."""
    d, width = 4, 6  # tokens [x (4), y, context flag]
    spec = get_op("attention")
    m = spec.build((2, 9, width), spec.bind({"heads": 2, "head_dim": 4}))
    lay = m.layout
    with torch.no_grad():
        for p in (lay.q.weight, lay.k.weight, lay.v.weight, lay.o.weight):
            p.zero_()
        for h, sign in enumerate((1.0, -1.0)):
            rows = slice(4 * h, 4 * h + 4)
            lay.q.weight[rows, :d] = torch.eye(d)
            lay.k.weight[rows, :d] = sign * 0.5 * torch.eye(d)
            lay.v.weight[4 * h, d] = 1.0  # value reads the label entry
            lay.o.weight[0, 4 * h] = sign * 0.3  # +mu and -mu into output entry 0
    patterns, zero_sum = head_patterns(lay, d)
    assert [round(p.kq_diagonal, 6) for p in patterns] == [1.0, 1.0]
    assert patterns[0].kq_scale == pytest.approx(0.5) and patterns[1].kq_scale == pytest.approx(-0.5)
    assert all(p.ov_label_share == pytest.approx(1.0) for p in patterns) and zero_sum == pytest.approx(0.0)
    torch.manual_seed(0)
    rand = spec.build((2, 9, width), spec.bind({"heads": 2, "head_dim": 4})).layout
    patterns, zero_sum = head_patterns(rand, d)
    assert all(p.kq_diagonal < 0.8 and p.ov_label_share < 0.8 for p in patterns) and zero_sum > 0.2
