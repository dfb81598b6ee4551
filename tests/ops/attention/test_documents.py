"""Document (varlen) masks, catalog S14: a packed sequence attends exactly as its
documents would one by one, and the drawn lengths tile the sequence."""
from __future__ import annotations

import pytest
import torch

from archgram.errors import ShapeError
from archgram.ops.attention.documents import document_lengths
from archgram.ops.registry import get_op

SPEC = get_op("attention")
pytestmark = pytest.mark.catalog("S14")


def build(shape, **args):
    torch.manual_seed(0)
    return SPEC.build(shape, SPEC.bind(args))


@pytest.mark.parametrize("position", ["none", "rope"])
@pytest.mark.parametrize("causal", [False, True])
def test_packed_documents_attend_as_if_each_ran_alone(causal, position):
    """Varlen semantics: attention over the packed sequence equals the same
    attention (same weights) run on each document separately, concatenated."""
    n, width = 23, 16
    packed = build((2, n, width), heads=2, causal=causal, position={"name": position},
                   pattern={"name": "document", "docs": 4, "seed": 3})
    lengths = document_lengths(n, 4, 3)
    assert len(set(lengths)) > 1  # uneven documents, or the test would not tell varlen from blocks
    x = torch.randn(2, n, width)
    pieces, start = [], 0
    for m in lengths:
        alone = build((2, m, width), heads=2, causal=causal, position={"name": position})
        alone.load_state_dict(packed.state_dict())
        pieces.append(alone(x[:, start:start + m]))
        start += m
    torch.testing.assert_close(packed(x), torch.cat(pieces, dim=1), atol=1e-5, rtol=1e-5)


def test_document_lengths_tile_the_sequence_and_depend_on_the_seed():
    for seed in (0, 1, 7):
        lengths = document_lengths(100, 6, seed)
        assert sum(lengths) == 100 and len(lengths) == 6 and min(lengths) >= 1
    assert document_lengths(100, 6, 0) == document_lengths(100, 6, 0)
    assert document_lengths(100, 6, 0) != document_lengths(100, 6, 1)
    assert document_lengths(10, 3, -1) == [4, 3, 3]
    assert document_lengths(5, 5, 0) == [1] * 5


def test_more_documents_than_tokens_is_refused():
    with pytest.raises(ShapeError, match="do not fit"):
        build((1, 3, 8), heads=2, pattern={"name": "document", "docs": 4})
