"""Pointer Networks (Vinyals, Fortunato & Jaitly 2015; catalog S03) as a grammar op.

Paper: an encoder reads the input sequence; a recurrent decoder emits one output
per step, and each output is a *pointer*, the attention distribution over the
input positions itself:

    u_j^i = v^T tanh(W1 e_j + W2 d_i),   p(C_i | C_1..C_{i-1}, P) = softmax(u^i)

where e_j are the encoder states and d_i the decoder state, which reads the
input element chosen at the previous step. So the i-th pointer depends on the
whole input and on every earlier pointer, and the output dictionary is the
input positions: its size follows the input length (variable-size outputs).

archgram: the searched body is the encoder (e_j = its output at position j); the
head is the decoder. An LSTM cell starts from tanh(W_0 mean_j e_j) (the paper
starts from the encoder's last state; a searched body has no last state, and the
mean keeps the head permutation-equivariant), reads a learned "go" vector first
and then W1 e_{C_{i-1}}, the key of the position it pointed at last, and scores
positions with the additive form above (``score="dot"`` is (W1 e_j) . (W2 d_i) /
sqrt(H)). Logits (B, M, N) are returned, a softmax over the last axis gives the
pointer distributions.

Training: as in the paper, with teacher forcing: a task whose head is this
decoder (``sort``, ``convex-hull``) feeds the true previous pointers during its
training forwards (``Task.teaching`` -> ``teach``). Without targets (inference,
or the ``pointer_head`` op inside a grammar, which never sees targets) each step
reads its own greedy choice (argmax). ``decode(h, pointers=...)`` takes given
pointers directly.

Differs: greedy decoding, not the paper's beam search; outputs are a fixed M per
call (``outputs``; 0 means one per input position); a task with
variable-length answers pads the targets (``convex-hull`` points back at its
start, then ignores the rest), where the paper emits an end symbol. As a grammar
op (not a task head) it trains free-running, which learns far worse on hulls
(experiments/pointer_networks).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.registry import Arg, Op, check_rank, register_op
from archgram.shapes import Shape, fmt

POINTER_SCORES = ("additive", "dot")


class PointerDecoder(nn.Module):
    """The Ptr-Net decoder: an LSTM whose every output is attention over the inputs."""

    def __init__(self, dim: int, outputs: int = 0, hidden: int = 32, score: str = "additive"):
        super().__init__()
        if score not in POINTER_SCORES:
            raise ShapeError(f"pointer head: score must be one of {POINTER_SCORES}, got {score!r}")
        self.outputs, self.hidden, self.score = outputs, hidden, score
        self.keys = nn.Linear(dim, hidden)  # W1 e_j, also the decoder's input for a chosen j
        self.init = nn.Linear(dim, hidden)  # decoder state from the mean encoding
        self.go = nn.Parameter(torch.randn(hidden) / math.sqrt(hidden))
        self.cell = nn.LSTMCell(hidden, hidden)
        self.query = nn.Linear(hidden, hidden, bias=False)  # W2 d_i
        self.v = nn.Linear(hidden, 1, bias=False) if score == "additive" else None
        self.teacher: torch.Tensor | None = None

    @contextlib.contextmanager
    def teach(self, pointers: torch.Tensor) -> Iterator[None]:
        """Teacher forcing for the forwards inside: in training mode, step i reads the
        true pointer ``pointers[:, i-1]`` instead of its own argmax."""
        self.teacher = pointers
        try:
            yield
        finally:
            self.teacher = None

    @staticmethod
    def param_count(dim: int, hidden: int, score: str) -> int:
        lstm = 4 * hidden * (2 * hidden) + 8 * hidden
        return 2 * (dim * hidden + hidden) + hidden + lstm + hidden * hidden + (hidden if score == "additive" else 0)

    def logits(self, keys: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """u^i over the N positions: (B, N) from keys (B, N, H) and decoder state (B, H)."""
        q = self.query(state)
        if self.v is None:
            return torch.einsum("bnh,bh->bn", keys, q) / math.sqrt(self.hidden)
        return self.v(torch.tanh(keys + q[:, None, :])).squeeze(-1)

    def decode(self, h: torch.Tensor, pointers: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, M, N); step i reads ``pointers[:, i-1]`` when given, else its own argmax."""
        b, n, _ = h.shape
        m = pointers.shape[1] if pointers is not None else self.outputs or n
        keys = self.keys(h)
        d = torch.tanh(self.init(h.mean(dim=1)))
        c = torch.zeros_like(d)
        inp = self.go.expand(b, -1)
        rows = []
        for i in range(m):
            d, c = self.cell(inp, (d, c))
            u = self.logits(keys, d)
            rows.append(u)
            chosen = pointers[:, i] if pointers is not None else u.argmax(dim=-1)
            inp = keys[torch.arange(b, device=h.device), chosen]
        return torch.stack(rows, dim=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        teacher = self.teacher if self.training else None
        return self.decode(h, teacher)


def teach_pointer_decoders(model: nn.Module, pointers: torch.Tensor) -> contextlib.ExitStack:
    """Teacher forcing for every pointer decoder in ``model`` (``Task.teaching`` of pointer tasks)."""
    stack = contextlib.ExitStack()
    for m in model.modules():
        if isinstance(m, PointerDecoder):
            stack.enter_context(m.teach(pointers))
    return stack


@register_op(
    "pointer_head",
    family="heads",
    refs=("S03",),
    args={
        "outputs": Arg(int, 0, low=0, doc="pointer outputs M; 0 means one per input position"),
        "hidden": Arg(int, 32, low=1, doc="decoder state width"),
        "score": Arg(str, "additive", choices=POINTER_SCORES),
    },
)
class PointerHeadOp(Op):
    """Ptr-Net decoder over a sequence: (B,N,D) -> pointer logits (B,M,N)."""

    def __init__(self, shape: Shape, outputs: int = 0, hidden: int = 32, score: str = "additive"):
        super().__init__()
        self.head = PointerDecoder(shape[2], outputs, hidden=hidden, score=score)

    @classmethod
    def output_shape(cls, shape: Shape, outputs: int = 0, hidden: int = 32, score: str = "additive") -> Shape:
        check_rank("pointer_head", shape, 3)
        if shape[1] < 1:
            raise ShapeError(f"pointer_head needs at least one input position, got {fmt(shape)}")
        return (shape[0], outputs or shape[1], shape[1])

    @classmethod
    def count_params(cls, shape: Shape, /, outputs: int = 0, hidden: int = 32, score: str = "additive") -> int:
        return PointerDecoder.param_count(shape[2], hidden, score)

    @classmethod
    def flops(cls, shape, out, params, /, outputs: int = 0, hidden: int = 32, score: str = "additive") -> int:
        return pointer_flops(shape, out[1], hidden, score)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


def pointer_flops(shape: Shape, outputs: int, hidden: int, score: str) -> int:
    """Forward FLOPs of the decoder: keys and initial state, then per step an LSTM cell and the scores."""
    b, n, d = shape
    step = 2 * (8 * hidden * hidden + hidden * hidden) + (3 if score == "additive" else 2) * n * hidden
    return 4 * b * n * d * hidden + b * outputs * step
