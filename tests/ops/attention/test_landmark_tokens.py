"""Landmark tokens carried through the layers (catalog S41): inserted after every
block, read as the blocks' retrieval keys by the grouped softmax, dropped at the end."""
from __future__ import annotations

import math

import pytest
import torch

import archgram
from archgram.errors import ShapeError
from archgram.grammar.model import Grammar
from archgram.ops.attention.landmark_tokens import landmark_positions
from archgram.ops.registry import get_op

SPEC = get_op("attention")
pytestmark = pytest.mark.catalog("S41")


def build(shape, **args):
    torch.manual_seed(0)
    return SPEC.build(shape, SPEC.bind(args))


def group_of(j, block):
    return j // (block + 1)


@pytest.mark.parametrize("causal", [False, True])
def test_far_blocks_are_gated_by_their_landmark_tokens_key_and_its_value_is_never_read(causal):
    """Grouped softmax over the own group's keys and the other groups' landmark-token
    keys; a far regular token j of group b gets p(landmark_b) * softmax within b."""
    n, block, d = 11, 3, 8  # 8 tokens + 3 landmarks: groups [3+L][3+L][2+L]
    m = build((1, n, 16), heads=2, causal=causal, pattern={"name": "landmark_tokens", "block": block}).train()
    x = torch.randn(1, n, 16)
    marks = landmark_positions(n, block).tolist()
    lm = [j for j in range(n) if marks[j]]
    with torch.no_grad():
        q, k, v = m.layout.qkv(x)
        heads = torch.zeros(1, 2, n, d)
        for h in range(2):
            for i in range(n):
                g = group_of(i, block)
                own = [j for j in range(n) if group_of(j, block) == g and (j <= i or not causal)]
                far = [b for b in range(len(lm)) if (b < g if causal else b != g)]
                logits = [q[0, h, i] @ k[0, h, j] / math.sqrt(d) for j in own]
                logits += [q[0, h, i] @ k[0, h, lm[b]] / math.sqrt(d) for b in far]
                p = torch.softmax(torch.stack(logits), 0)
                out = sum(p[a] * v[0, h, j] for a, j in enumerate(own))
                for a, b in enumerate(far):
                    members = [j for j in range(n) if group_of(j, block) == b and not marks[j]]
                    inner = torch.softmax(torch.stack([q[0, h, i] @ k[0, h, j] for j in members]) / math.sqrt(d), 0)
                    out = out + p[len(own) + a] * sum(w * v[0, h, j] for w, j in zip(inner, members))
                heads[0, h, i] = out
        expected = m.layout.out(heads, x)
    torch.testing.assert_close(m(x), expected, atol=1e-5, rtol=1e-5)


def test_eval_retrieves_the_own_group_and_the_top_k_groups_by_landmark_token_score():
    n, block, top_k = 14, 3, 1  # 11 tokens + landmarks: groups [3+L][3+L][3+L][2+L]
    m = build((2, n, 16), heads=2, pattern={"name": "landmark_tokens", "block": block, "top_k": top_k}).eval()
    with torch.no_grad():
        q, k, _ = m.layout.qkv(torch.randn(2, n, 16))
        mask = m.pattern.mask_for(q, k, None)
    lm = [j for j, is_lm in enumerate(landmark_positions(n, block).tolist()) if is_lm]
    for b in range(2):
        for h in range(2):
            for i in range(n):
                others = [g for g in range(len(lm)) if g != group_of(i, block)]
                best = max(others, key=lambda g: float(q[b, h, i] @ k[b, h, lm[g]]))
                expected = [group_of(j, block) in (best, group_of(i, block)) for j in range(n)]
                assert mask[b, h, i].tolist() == expected


def test_landmark_states_are_carried_through_the_layers_and_dropped_at_the_end():
    """insert -> two attention layers -> drop: the tokens come back in place, and the
    second layer's landmark keys are computed from the first layer's landmark states."""
    g = Grammar.from_text(
        "net  : landmark_insert(block=4) layer layer landmark_drop(block=4)\n"
        "layer: clone(2) mix identity add\n"
        "mix  : layernorm attention(heads=2, pattern=landmark_tokens(4, 1))\n")
    model = archgram.compile(g.sample((2, 10, 8), seed=0), (2, 10, 8))
    x = torch.randn(2, 10, 8)
    seen = []
    for mod in model.modules():
        if type(mod).__name__ == "Attention":
            mod.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    assert model(x).shape == (2, 10, 8)
    first, second = seen
    marks = landmark_positions(first.shape[1], 4)
    assert first.shape[1] == 13 and marks.sum() == 3
    assert not torch.allclose(first[:, marks], second[:, marks])  # the landmark states deepen
    insert = next(mod for mod in model.modules() if type(mod).__name__ == "LandmarkInsert")
    drop = get_op("landmark_drop").build((2, 13, 8), {"block": 4})
    torch.testing.assert_close(drop(insert(x)), x)


def test_landmark_drop_refuses_a_sequence_without_landmarks_laid_out():
    with pytest.raises(ShapeError, match="landmark"):
        get_op("landmark_drop").cls.output_shape((2, 11, 8), block=4)
    assert get_op("landmark_insert").cls.output_shape((2, 10, 8), block=4) == (2, 13, 8)
    assert get_op("landmark_drop").cls.output_shape((2, 13, 8), block=4) == (2, 10, 8)
