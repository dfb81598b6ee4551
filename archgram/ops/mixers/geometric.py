"""The causal Grassmann layer ('Attention Is Not What You Need: Grassmann Flows as an
Attention-Free Alternative for Sequence Modeling', Zhang 2025)."""
from __future__ import annotations

import torch
from torch import nn

from archgram.ops.mixers.common import Mixer
from archgram.ops.registry import Arg, register_op
from archgram.shapes import Shape


def plucker(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Plücker coordinates of span(u, v) in R^r: p_ij = u_i v_j - u_j v_i for i < j.

    (..., r), (...., r) -> (..., r(r-1)/2), pairs in row-major (0,1), (0,2), ..., (r-2,r-1).
    They are the 2x2 minors of [u; v]: unchanged (up to scale) by any basis change of the
    plane, so they embed the point of Gr(2, r) in projective space.
    """
    r = u.shape[-1]
    i, j = torch.triu_indices(r, r, offset=1, device=u.device)
    return u[..., i] * v[..., j] - u[..., j] * v[..., i]


@register_op(
    "grassmann",
    family="mixers",
    args={"rank": Arg(int, 8, low=2, doc="r: token states are reduced to R^r"),
          "offsets": Arg(tuple, (1, 2, 4), doc="pair distances: token t meets t - delta")},
    refs=("S64",),
)
class Grassmann(Mixer):
    """Causal Grassmann mixing layer, sequences only.

    (i) z = W_red h reduces each token to R^r; (ii) for every offset delta, token t and token
    t - delta span a 2-plane, a point of Gr(2, r); (iii) its Plücker vector, normalised to unit
    length, is mapped back to D and averaged over the offsets that exist for t (t >= delta);
    (iv) a gate alpha = sigmoid(W_g [h; g]) fuses: out = alpha * h + (1 - alpha) * g.
    Only tokens <= t are read, so the layer is causal, and it is linear in N.

    Paper's defining mechanism: an attention-free causal layer that (i) linearly
    reduces token states, (ii) encodes each local pair (t - delta, t) over
    multi-scale offsets as a 2-plane on the Grassmannian through its Plucker
    coordinates, (iii) fuses those geometric features back through a gated mix;
    no L x L matrix, cost linear in the length.
    What archgram does: (i)-(iv) above, offsets a grammar argument.
    What differs: nothing in the mechanism; the pair features are averaged over
    the offsets that exist for a token (the paper's exact pooling over offsets
    and any per-block normalisation around the layer are left to the grammar).
    """

    ranks = (3,)

    def __init__(self, shape: Shape, rank: int = 8, offsets: tuple = (1, 2, 4)):
        super().__init__()
        self.output_shape(shape, rank=rank, offsets=offsets)
        d = shape[2]
        self.offsets = tuple(int(o) for o in offsets)
        self.reduce = nn.Linear(d, rank)
        self.lift = nn.Linear(rank * (rank - 1) // 2, d)
        self.gate = nn.Linear(2 * d, d)

    @classmethod
    def check(cls, shape, rank=8, offsets=(1, 2, 4)):
        if not offsets or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 1 for o in offsets):
            cls.refuse(shape, f"offsets must be positive integers, got {offsets!r}")
        if min(offsets) >= shape[1]:
            cls.refuse(shape, f"no offset in {offsets} fits {shape[1]} tokens")

    def forward(self, h):
        b, n, d = h.shape
        z = self.reduce(h)
        total = torch.zeros_like(h)
        count = torch.zeros(1, n, 1, dtype=h.dtype, device=h.device)
        for delta in self.offsets:
            if delta >= n:
                continue
            p = plucker(z[:, :-delta], z[:, delta:])  # pairs (t - delta, t) for t >= delta
            p = p / p.norm(dim=-1, keepdim=True).clamp_min(1e-6)
            total[:, delta:] += self.lift(p)
            count[:, delta:] += 1
        g = total / count.clamp_min(1)
        alpha = torch.sigmoid(self.gate(torch.cat([h, g], dim=-1)))
        return alpha * h + (1 - alpha) * g


__all__ = ["Grassmann", "plucker"]
