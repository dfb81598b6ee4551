"""Pointer Networks' decoder (S03): every output is attention over the input
positions, computed from a decoder state that has read the earlier pointers."""
from __future__ import annotations

import pytest
import torch

from archgram.ops import get_op
from archgram.ops.heads import PointerDecoder

pytestmark = pytest.mark.catalog("S03")


def build(shape, **args):
    torch.manual_seed(0)
    spec = get_op("pointer_head")
    return spec.build(shape, spec.bind(args)).double()


def test_pointer_decoder_step_is_additive_attention_from_an_lstm_that_reads_the_last_pointer():
    """Reference loop: d_i = LSTM(input_i, d_{i-1}); u_j^i = v . tanh(W1 e_j + W2 d_i); input_{i+1} = W1 e_{C_i}."""
    m = build((2, 5, 3), hidden=4).head
    e = torch.randn(2, 5, 3, dtype=torch.float64)
    pointers = torch.tensor([[3, 1, 4], [0, 0, 2]])
    with torch.no_grad():
        W1e = e @ m.keys.weight.T + m.keys.bias
        d = torch.tanh(e.mean(1) @ m.init.weight.T + m.init.bias)
        c = torch.zeros_like(d)
        inp = m.go.expand(2, -1)
        for i in range(3):
            d, c = m.cell(inp, (d, c))
            u = torch.tanh(W1e + (d @ m.query.weight.T)[:, None]) @ m.v.weight[0]
            torch.testing.assert_close(m.decode(e, pointers)[:, i], u)
            inp = W1e[torch.arange(2), pointers[:, i]]


def test_each_pointer_depends_on_the_earlier_pointers():
    """Changing the pointer chosen at step 0 leaves step 0's distribution alone and changes step 1's."""
    m = build((1, 6, 4), hidden=8).head
    e = torch.randn(1, 6, 4, dtype=torch.float64)
    with torch.no_grad():
        a = m.decode(e, torch.tensor([[2, 0]]))
        b = m.decode(e, torch.tensor([[5, 0]]))
    torch.testing.assert_close(a[:, 0], b[:, 0])
    assert (a[:, 1] - b[:, 1]).abs().max() > 1e-3


def test_greedy_decoding_feeds_back_its_own_argmax():
    m = build((2, 7, 4), hidden=8)
    e = torch.randn(2, 7, 4, dtype=torch.float64)
    with torch.no_grad():
        greedy = m(e)
        torch.testing.assert_close(m.head.decode(e, greedy.argmax(-1)), greedy)
    assert greedy.shape == (2, 7, 7)


@pytest.mark.parametrize("score", ["additive", "dot"])
def test_pointers_permute_with_the_inputs_and_the_dictionary_follows_the_input_length(score):
    """The output dictionary is the input positions: permuting the inputs permutes every
    pointer distribution the same way, and one set of weights points over 5 or 9 inputs."""
    m = build((1, 5, 3), hidden=6, score=score)
    e = torch.randn(1, 9, 3, dtype=torch.float64)
    perm = torch.randperm(9)
    with torch.no_grad():
        out, out_perm = m(e), m(e[:, perm])
        torch.testing.assert_close(out_perm, out[..., perm])
        assert m(e[:, :5]).shape == (1, 5, 5) and out.shape == (1, 9, 9)


def test_declared_parameter_count_matches_the_module():
    for score in ("additive", "dot"):
        m = PointerDecoder(5, 0, hidden=7, score=score)
        assert sum(p.numel() for p in m.parameters()) == PointerDecoder.param_count(5, 7, score)


def test_teacher_forcing_feeds_the_true_previous_pointers_only_while_training():
    """Pointer tasks train as the paper does: inside ``Task.teaching`` a training forward
    reads the target pointers; eval (and any forward outside it) reads its own argmax."""
    from archgram.tasks import get_task

    task = get_task("sort", length=5, n_train=8, n_val=8)
    head = task.head((8, 5, 4)).double()
    model = torch.nn.Sequential(torch.nn.Identity(), head)
    h = torch.randn(8, 5, 4, dtype=torch.float64)
    y = torch.stack([torch.randperm(5) for _ in range(8)])
    with task.teaching(model, y):
        forced = model.train()(h)
        free_in_eval = model.eval()(h)
    torch.testing.assert_close(forced, head.decode(h, y))
    torch.testing.assert_close(free_in_eval, head.decode(h))
    assert head.teacher is None
    assert not torch.allclose(forced, free_in_eval)
