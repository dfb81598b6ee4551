"""Shape-time refusals and FLOP accounting of the attention op: linear scores never
meet logit-bias positions, FLOPs follow the layout's maps and the score's cost."""
from __future__ import annotations

import pytest
import torch

from archgram.errors import ShapeError
from archgram.grammar.model import Grammar
from archgram.ops.attention import POSITIONS, SCORES
from archgram.ops.attention.op import adds_bias
from archgram.ops.registry import get_op

SPEC = get_op("attention")
LINEAR = ["linear", "lightning", "nala", "flow", "agent", "hebbian", "kernel_rpe"]
BIASED = ["alibi", "rope_alibi", "urpe"]


@pytest.mark.catalog("S04", "S21", "S32", "S34", "S40", "S44", "S48", "S59", "S67")
def test_bias_adding_positions_are_flagged():
    assert {name for name, cls in POSITIONS.parts.items() if adds_bias(cls)} >= set(BIASED)
    assert not adds_bias(POSITIONS.parts["none"]) and not adds_bias(POSITIONS.parts["rope"])
    assert all(not SCORES.parts[name].takes_bias for name in LINEAR)
    assert SCORES.parts["softmax"].takes_bias and SCORES.parts["triplewise"].takes_bias


@pytest.mark.catalog("S04", "S21", "S32", "S34", "S40", "S44", "S48", "S59", "S67")
@pytest.mark.parametrize("score", LINEAR)
@pytest.mark.parametrize("position", BIASED)
def test_shape_rule_refuses_linear_scores_with_bias_positions(score, position):
    with pytest.raises(ShapeError, match="bias|reweights"):
        SPEC.cls.output_shape((2, 8, 16), heads=2, score={"name": score}, position={"name": position})


@pytest.mark.catalog("S04", "S21", "S32", "S34", "S40", "S44", "S48", "S59", "S67")
def test_sampler_never_pairs_linear_scores_with_bias_positions():
    g = Grammar.from_text(
        "net : attention(heads=2, score=softmax|linear|lightning(4)|nala|flow|hebbian|kernel_rpe(8, 4),"
        " position=none|rope|alibi|rope_alibi|urpe)\n"
    )
    pairs = set()
    for seed in range(50):
        args = g.sample((2, 8, 16), seed=seed).ops()[0].args
        pairs.add((args["score"]["name"], args["position"]["name"]))
    assert not {(s, p) for s, p in pairs if s != "softmax" and p in BIASED}
    assert any(s != "softmax" for s, _ in pairs) and any(p in BIASED for _, p in pairs)


def test_softmax_mha_flops_match_a_hand_count():
    """B=2, N=16, D=32, 4 heads of 8: projections 2 * params * B * N, plus
    q k^T and weights v, 2 * 2 * B * H * N^2 * d."""
    shape, b, n, dim, heads, d = (2, 16, 32), 2, 16, 32, 4, 8
    params = 4 * (dim * dim + dim)
    m = SPEC.build(shape, SPEC.bind({"heads": heads}))
    assert sum(p.numel() for p in m.parameters()) == params
    hand = 2 * params * b * n + 2 * b * heads * n * n * d + 2 * b * heads * n * n * d
    assert SPEC.cls.flops(shape, shape, params, heads=heads) == hand == 335872


@pytest.mark.catalog("S42", "S68")
def test_flops_follow_the_layouts_attention_maps():
    shape = (1, 32, 64)
    core = 4 * 32 * 32 * 16  # one map of head dim 16 over 32 tokens
    assert SPEC.cls.flops(shape, shape, 0, heads=4) == 4 * core
    assert SPEC.cls.flops(shape, shape, 0, heads=4, layout={"name": "sqa", "_0": 1}) == core
    assert SPEC.cls.flops(shape, shape, 0, heads=4, layout={"name": "tpla", "_0": 16, "_1": 2}) == 8 * core


@pytest.mark.catalog("S04", "S21", "S34", "S40", "S44", "S48", "S59")
@pytest.mark.parametrize("score", LINEAR)
def test_linear_score_flops_grow_linearly_in_n(score):
    def core(n):
        return SPEC.cls.flops((1, n, 32), None, 0, heads=2, score={"name": score})

    if score == "kernel_rpe":  # FFT Toeplitz products: n log n, far from the quadratic 16x
        assert core(4096) / core(1024) < 4 * 1.25
        return
    assert core(2048) == 2 * core(1024) == 4 * core(512)
    softmax = SPEC.cls.flops((1, 4096, 32), None, 0, heads=2)
    assert core(4096) < softmax / 10


def test_pattern_bias_local_is_renamed():
    import inspect

    from archgram.ops.attention.op import Attention

    src = inspect.getsource(Attention.forward)
    assert "pattern_bias" in src and "reweight =" not in src


def test_combiner_pattern_bias_still_reaches_the_logits():
    torch.manual_seed(0)
    m = SPEC.build((1, 16, 8), SPEC.bind({"heads": 2, "pattern": {"name": "combiner", "_0": 4}}))
    y = m(torch.randn(1, 16, 8))
    assert y.shape == (1, 16, 8) and torch.isfinite(y).all()
