"""KArAt's low-rank learnable row operator (S05): a Fourier KAN over each row of
scores to rank r, a learned map back to the keys, then l1 rows."""
from __future__ import annotations

import math

import pytest
import torch

from archgram.errors import ShapeError
from archgram.ops import get_op
from archgram.ops.attention.parts import SCORES

pytestmark = pytest.mark.catalog("S05")
SPEC = get_op("attention")


def score(**params):
    torch.manual_seed(0)
    return SCORES.get("karat_lowrank")(2, **params).double()


def test_karat_lowrank_is_a_fourier_kan_to_rank_r_then_back_then_l1_rows():
    """Explicit loops: z_r = sum_k sum_g a_rkg cos(g s_k) + b_rkg sin(g s_k); w_j = exp(s_j - max) + sum_r W_jr z_r."""
    sc = score(rank=2, grid=2, max_len=6)
    with torch.no_grad():
        sc.up.normal_()
    s = torch.randn(1, 2, 3, 4, dtype=torch.float64)
    mask = torch.ones(3, 4, dtype=torch.bool).tril(1)  # query i sees keys 0..i+1
    got = sc.weights(s, mask)
    for h in range(2):
        for i in range(3):
            seen = [k for k in range(4) if mask[i, k]]
            z = [sum(sc.cos[h, r, k, g] * math.cos((g + 1) * s[0, h, i, k]) + sc.sin[h, r, k, g] * math.sin((g + 1) * s[0, h, i, k])
                     for k in seen for g in range(2)) for r in range(2)]
            top = max(float(s[0, h, i, k]) for k in seen)
            w = torch.zeros(4, dtype=torch.float64)
            for j in seen:
                w[j] = math.exp(s[0, h, i, j] - top) + sum(sc.up[h, j, r] * z[r] for r in range(2))
            torch.testing.assert_close(got[0, h, i], w / w.abs().sum())


def test_a_keys_weight_depends_on_the_other_keys_scores_unlike_elementwise_karat():
    """The operator mixes across the row: d f_j / d s_k != 0 for k != j. The elementwise
    Fourier KArAt has a diagonal Jacobian before normalisation."""
    sc = score(rank=3, max_len=5)
    with torch.no_grad():
        sc.up.normal_()
    s = torch.randn(1, 2, 1, 5, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda t: sc.function(t)[0, 0, 0], s)[:, 0, 0, 0]  # (5, 5)
    off = jac - torch.diag(torch.diagonal(jac))
    assert off.abs().max() > 1e-3
    elementwise = SCORES.get("karat")(2).double()
    jac_e = torch.autograd.functional.jacobian(lambda t: elementwise.function(t)[0, 0, 0], s)[:, 0, 0, 0]
    torch.testing.assert_close(jac_e - torch.diag(torch.diagonal(jac_e)), torch.zeros(5, 5, dtype=torch.float64))


def test_karat_lowrank_starts_as_softmax_and_refuses_rows_longer_than_its_operator():
    sc = score(max_len=8)  # W = 0 at init: the exp base alone, l1-normalised = softmax
    s = torch.randn(1, 2, 4, 8, dtype=torch.float64)
    torch.testing.assert_close(sc.weights(s, None), s.softmax(-1))
    with pytest.raises(ShapeError, match="max_len"):
        SPEC.cls.output_shape((1, 9, 16), **SPEC.bind({"heads": 2, "score": {"name": "karat_lowrank", "max_len": 8}}))


def test_karat_learns_a_target_attention_function_from_its_weights():
    """The learnable score can be fitted: from its softmax-like start, gradient descent on the
    elementwise Fourier KArAt's coefficients recovers a target function's attention weights."""
    torch.manual_seed(0)
    target = SCORES.get("karat")(2, grid=3).double()
    with torch.no_grad():
        target.cos.copy_(torch.tensor([[0.8, -0.3, 0.2], [0.1, 0.5, -0.4]]))
        target.sin.copy_(torch.tensor([[-0.2, 0.4, 0.1], [0.6, -0.1, 0.3]]))
    student = SCORES.get("karat")(2, grid=3).double()
    s = torch.randn(8, 2, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        want = target.weights(s, None)

    def gap():
        with torch.no_grad():
            return float((student.weights(s, None) - want).abs().mean())

    before = gap()
    opt = torch.optim.Adam(student.parameters(), lr=0.08)
    for _ in range(80):
        opt.zero_grad()
        (student.weights(s, None) - want).square().mean().backward()
        opt.step()
    assert gap() < before / 10, (before, gap())
