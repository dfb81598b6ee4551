"""Content-based attention patterns: which keys a query sees is decided from the
queries and keys themselves (landmark retrieval, token selection; k-means
routing is in routing.py). Sparsifiner (sparsifiner.py) gathers its keys rather than masking
them; Combiner (combiner.py) attends to block summaries instead of far keys.

Each returns a boolean (B, H, N, N) mask from ``mask_for``. A boolean mask
carries no gradient, so every selection here is a hard, stop-gradient choice;
the attention over the chosen keys stays differentiable. Every query also keeps
its own key, so no row is empty, with or without the op's causal mask.
"""
from __future__ import annotations

import math

import torch

from archgram.errors import ShapeError
from archgram.ops.attention.parts import PATTERNS
from archgram.ops.attention.patterns import Pattern, require_integers


def _with_self(mask: torch.Tensor) -> torch.Tensor:
    """``mask`` with the diagonal set: every query sees at least its own key."""
    n = mask.shape[-1]
    return mask | torch.eye(n, dtype=torch.bool, device=mask.device)


def _topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """True at the k largest finite entries of each row of ``scores``."""
    k = min(k, scores.shape[-1])
    if k == 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    top = scores.topk(k, dim=-1)
    chosen = torch.zeros_like(scores, dtype=torch.bool).scatter(-1, top.indices, True)
    return chosen & torch.isfinite(scores)


def _causal_fill(scores: torch.Tensor) -> torch.Tensor:
    """Scores of future keys set to -inf (query i, key j > i)."""
    nq, nk = scores.shape[-2:]
    future = torch.ones(nq, nk, dtype=torch.bool, device=scores.device).triu(1)
    return scores.masked_fill(future, float("-inf"))


@PATTERNS.register
class Landmark(Pattern):
    """Landmark attention (Mohtashami & Jaggi 2023, "Random-Access Infinite Context
    Length for Transformers"; catalog S41).

    Paper's defining mechanism: the sequence is cut into blocks, each followed by
    a landmark token; attention uses a *grouped softmax*: a query's softmax runs
    over the tokens of its own block and the landmarks of the other blocks, and a
    token j of another block b receives p(landmark_b | i) * softmax_{j' in b}(q_i .
    k_j'). Training this makes the landmark score a learned retrieval key for its
    block; at inference a query retrieves only the top-k blocks by landmark score
    (random access into long context). Causal: earlier blocks only.

    What archgram does: exactly that distribution, written as an additive bias on
    the dense logits (``bias_for``: a far key j of block b gets s_b - logsumexp_{j'
    in b} q . k_j' added, s_b the landmark logit), so one softmax over all keys
    gives the grouped weights; in training every block is reachable, in eval mode
    the mask keeps the own block plus the ``top_k`` blocks of highest landmark
    score (stop-gradient retrieval, as in the paper's inference).

    What differs: nothing, with the grammar parts of ``landmark_tokens.py``:
    ``landmark_insert(block)`` puts a landmark token after every block, the
    ``landmark_tokens(block, top_k)`` pattern reads each block's gate logit from
    its landmark token's key (so the landmark state deepens across layers), and
    ``landmark_drop(block)`` removes them. This pattern is the single-op form
    for stacks without landmark tokens: its key is what a landmark token
    reading its block would hold, a learned per-head pooling of the block's
    keys, sum_j softmax_j(w_h . k_j) k_j (w = 0 at the start: the mean key).
    With scores other than softmax the bias is applied but the grouped
    normalisation is softmax's.
    """

    name = "landmark"
    params = ("block", "top_k")
    refs = ("S41",)
    data_dependent = True
    top_k = 2

    def check(self, n, grid):
        require_integers(self, "block")
        require_integers(self, "top_k", low=0)

    def module(self, heads, head_dim, tokens):
        from archgram.ops.attention.combiner import LocalExpectation  # the same learned in-block pooling

        self.landmarks = LocalExpectation(heads, head_dim)
        return self.landmarks

    def _blocks(self, n: int, device) -> tuple[torch.Tensor, int]:
        blocks = torch.arange(n, device=device) // self.block
        return blocks, int(blocks[-1]) + 1

    def landmark_logits(self, q, k) -> torch.Tensor:
        """(B, H, N, nb): q_i . landmark key of block b, scaled."""
        blocks, nb = self._blocks(q.shape[-2], q.device)
        keys, _, _ = self.landmarks.summaries(k, k[..., :1], blocks, nb)
        return q @ keys.transpose(-1, -2) / math.sqrt(q.shape[-1])

    def _candidates(self, blocks: torch.Tensor, nb: int) -> torch.Tensor:
        ids = torch.arange(nb, device=blocks.device)
        return (ids[None, :] < blocks[:, None]) if self.causal else (ids[None, :] != blocks[:, None])

    def bias_for(self, q, k, grid):
        """Grouped softmax as additive logits: far key j of block b gets s_b - lse_b(q . k)."""
        n = q.shape[-2]
        blocks, nb = self._blocks(n, q.device)
        logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, N, N)
        pad = nb * self.block - n
        grouped = torch.nn.functional.pad(logits, (0, pad), value=float("-inf")).unflatten(-1, (nb, self.block))
        lse = torch.logsumexp(grouped, -1)  # (B, H, N, nb)
        far = (self.landmark_logits(q, k) - lse)[..., blocks]  # per key, its block's correction
        own = blocks[:, None] == blocks[None, :]
        return far.masked_fill(own, 0.0)

    def mask_for(self, q, k, grid):
        """Training: every block reachable (causal: earlier ones; the op ANDs its mask).
        Eval: the own block plus the top_k blocks by landmark score."""
        if self.landmarks.training:
            return None
        blocks, nb = self._blocks(q.shape[-2], q.device)
        with torch.no_grad():
            scores = self.landmark_logits(q, k)
            own = blocks[:, None] == torch.arange(nb, device=q.device)[None, :]
            chosen = _topk_mask(scores.masked_fill(~self._candidates(blocks, nb), float("-inf")), self.top_k) | own
        return chosen[..., blocks]  # a key is visible when its block is


@PATTERNS.register
class TokenSelect(Pattern):
    """Token Sparse Attention (Jo et al. 2026, "Efficient Long-Context Inference with
    Interleaved Token Selection"; catalog S60).

    Paper's defining mechanism: in every layer and head, select a reduced token
    set S_h, *compress* Q, K and V to the rows of S_h, run dense attention among
    them, and *decompress* the output back to the full sequence: a selected token
    gets attention over the selected tokens, an unselected one gets no attention
    output (its residual carries it), and because the choice is remade in the
    next layer and head, a token skipped here can return there. Attention cost
    falls from N^2 to |S_h|^2; the set size follows the importance mass (Dynamic
    Token Coverage).

    What archgram does: ``select`` picks per (batch, head) the fewest tokens
    whose share of the importance reaches ``coverage`` (1.0: always ``keep``),
    at most ``keep``. Importance (``by``): ``attention`` is the softmax mass a key
    receives from all queries (causal if the op is), ``norm`` the key's L2 norm.
    With a plain dot-product score the op gathers the selected rows, attends
    among them (causal in the original order) and scatters the result into a zero
    output (``compressed_attend``): the core costs O(keep^2 d). Other scores run
    the same attention as a dense mask (selected queries see selected keys) with
    the unselected rows zeroed. Stop-gradient selection (training-free, as in
    the paper).

    What differs: the importance estimate here scores every key against every
    query, an O(N^2) pass without gradient that the paper estimates more cheaply;
    the attention itself is the paper's.
    """

    name = "token_select"
    params = ("keep", "by", "coverage")
    refs = ("S60",)
    data_dependent = True
    compresses = True
    by = "attention"
    coverage = 1.0

    def check(self, n, grid):
        require_integers(self, "keep")
        if self.by not in ("attention", "norm"):
            raise ShapeError(f"token_select: 'by' must be attention or norm, got {self.by!r}")
        if isinstance(self.coverage, bool) or not isinstance(self.coverage, (int, float)) or not 0 < self.coverage <= 1:
            raise ShapeError(f"token_select: coverage must lie in (0, 1], got {self.coverage!r}")

    def attended_keys(self, n: int) -> int:
        return min(n, self.keep)

    def importance(self, q, k) -> torch.Tensor:
        """(B, H, N) score per key token; higher is kept."""
        if self.by == "norm":
            return k.norm(dim=-1)
        logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        if self.causal:
            logits = _causal_fill(logits)
        return logits.softmax(-1).sum(-2)

    @torch.no_grad()
    def select(self, q, k) -> tuple[torch.Tensor, torch.Tensor]:
        """(idx (B, H, m) token indices in ascending order, valid (B, H, m)), m = min(keep, N):
        per head the top tokens by importance, the fewest whose share reaches ``coverage``."""
        score = self.importance(q, k).float()
        m = min(self.keep, score.shape[-1])
        top = score.topk(m, dim=-1)
        share = top.values.clamp_min(0).cumsum(-1) / score.clamp_min(0).sum(-1, keepdim=True).clamp_min(1e-30)
        before = torch.cat([torch.zeros_like(share[..., :1]), share[..., :-1]], -1)
        valid = before < self.coverage  # keep adding tokens until the coverage is reached
        order = torch.where(valid, top.indices, score.shape[-1]).sort(-1)
        return order.values.clamp_max(score.shape[-1] - 1), order.values < score.shape[-1]

    def kept(self, q, k) -> torch.Tensor:
        """(B, H, N) bool: the tokens ``select`` keeps."""
        idx, valid = self.select(q, k)
        return torch.zeros(*idx.shape[:2], q.shape[-2], dtype=torch.bool, device=q.device).scatter(-1, idx, valid)

    def mask_for(self, q, k, grid):
        """Dense form: selected queries see selected keys; an unselected query sees
        only itself (so no row is empty) and the op zeroes its output (``rows``)."""
        keep = self.kept(q, k)
        return _with_self(keep[..., :, None] & keep[..., None, :])

    def rows(self, q, k) -> torch.Tensor:
        """(B, H, N, 1) 1.0 for the queries that get attention output, 0.0 for the rest."""
        return self.kept(q, k)[..., None].to(q.dtype)


def compressed_attend(score, q, k, v, idx, valid, bias, scale: float, causal: bool) -> torch.Tensor:
    """Token Sparse Attention's compress -> attend -> decompress, per head.

    Gathers rows ``idx`` (B, H, m, ascending) of q, k, v, attends among them with
    ``score`` (causal in the original order when ``causal``; padded slots, where
    ``valid`` is False, are neither attended to nor written back), and scatters the
    result into a zero (B, H, N, Dv) output."""
    def rows(x):
        return x.gather(2, idx[..., None].expand(*idx.shape, x.shape[-1]))

    mask = valid[..., None, :] & valid[..., :, None]
    if causal:
        mask = mask & (idx[..., None, :] <= idx[..., :, None])
    mask = mask | torch.eye(idx.shape[-1], dtype=torch.bool, device=idx.device)
    if bias is not None:
        full = bias.expand(*idx.shape[:2], *bias.shape[-2:])
        bias = full.gather(2, idx[..., None].expand(*idx.shape, full.shape[-1])).gather(
            3, idx[..., None, :].expand(*idx.shape, idx.shape[-1]))
    out = score.attend(rows(q), rows(k), rows(v), mask, bias, scale) * valid[..., None].to(v.dtype)
    # scatter_add: padded slots (zeros) may share an index with a real one
    return torch.zeros(*v.shape[:-1], out.shape[-1], dtype=out.dtype, device=out.device).scatter_add(
        2, idx[..., None].expand(*idx.shape, out.shape[-1]), out)
