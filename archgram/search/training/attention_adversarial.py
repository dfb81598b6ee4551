"""Adversarial training on attention: Attention AT (Kitada & Iyatomi 2021,
catalog S74) and Attention VAT (Kitada & Iyatomi 2022, S75).

Attention mechanisms are vulnerable to perturbations of the attention itself,
so these methods perturb the attention scores (the logits before the
normalising score function) of every attention layer, not the input
embedding:

- Attention AT: r = eps * g / ||g||, g the gradient of the supervised loss with
  respect to every layer's logits (one norm per example over all layers); the
  loss at logits + r is added to the training loss.
- Attention VAT: no labels. r is the direction over all layers' logits that
  most changes the model's own prediction, KL(p || p(logits + r)), found by
  power iteration from a random direction; that divergence is added.

The perturbation enters through the composite attention op's ``LOGIT_HOOK``
(an additive logit term, like a position bias); ops whose score never forms
logits (linear attention) are not perturbed. ``eps`` and ``xi`` are in logit
units here (the embedding methods use fractions of the embedding norm).

Papers' defining mechanism: adversarial (S74) and virtual adversarial (S75)
perturbations applied to the attention mechanism itself, so that training
makes attention robust to them and, per the papers, more interpretable; plus
the "interpretable" variants iAT / iVAT, whose perturbation is taken on
attention normalised across the words to sharpen differences between them.
What archgram does: Attention AT, VAT, iAT and iVAT on the logits of every
composite attention layer (``adversarial=attention_at`` / ``attention_vat`` /
``attention_iat`` / ``attention_ivat``), next to the embedding-level AT / VAT
(``at`` / ``vat``) the papers compare against. The interpretable variants
restrict the perturbation to the span of the differences between an example's
attention and the other examples' in the batch (``toward_other_examples``).
What differs: the papers perturb one RNN attention layer's additive scores;
here every attention op's logits are perturbed jointly with one norm per
example, the natural reading for a network with many attention layers.
Attention ops on a gathered, compressed or factorised path (Sparsifiner,
token-sparse, Combiner, the gathered grid and routing patterns) and linear
scores are not perturbed.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from archgram.errors import ArchgramError
from archgram.ops.attention import op as attention_op
from archgram.search.training.divergence import TINY, divergence


class _Logits:
    """The hook: a fixed perturbation per op, or new zero leaves to take gradients
    at (then also the clean logits, which the interpretable variants need)."""

    def __init__(self, fixed: dict[int, torch.Tensor] | None = None):
        self.fixed = fixed
        self.leaves: dict[int, torch.Tensor] = {}
        self.logits: dict[int, torch.Tensor] = {}

    def __call__(self, op, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor | None:
        if self.fixed is not None:
            return self.fixed.get(id(op))
        r = torch.zeros(q.shape[0], q.shape[1], q.shape[2], k.shape[2], dtype=q.dtype, device=q.device,
                        requires_grad=True)
        self.leaves[id(op)] = r  # an op called twice in one forward keeps its last call's leaf
        with torch.no_grad():
            self.logits[id(op)] = op.score.logits(q, k, op.scale)
        return r


@contextlib.contextmanager
def _hooked(hook: _Logits) -> Iterator[_Logits]:
    if attention_op.LOGIT_HOOK is not None:
        raise ArchgramError("attention logits are already being perturbed (hooks do not nest)")
    attention_op.LOGIT_HOOK = hook
    try:
        yield hook
    finally:
        attention_op.LOGIT_HOOK = None


def _leaves(body, emb) -> tuple[_Logits, torch.Tensor]:
    with _hooked(_Logits()) as hook:
        pred = body(emb)
    if not hook.leaves:
        raise ArchgramError("attention adversarial training needs an attention op whose score forms logits "
                            "(softmax, sigmoid, ...); this model has none")
    return hook, pred


def _grads(out: torch.Tensor, leaves: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    got = torch.autograd.grad(out, list(leaves.values()), allow_unused=True)
    return {key: torch.zeros_like(leaf) if g is None else g for (key, leaf), g in zip(leaves.items(), got)}


def unit_over_layers(parts: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    """Per example, the layers' perturbations scaled so that together they have norm 1."""
    clean = {key: torch.nan_to_num(t.detach(), nan=0.0, posinf=0.0, neginf=0.0) for key, t in parts.items()}
    norm = sum(t.flatten(1).square().sum(1) for t in clean.values()).sqrt().clamp_min(TINY)
    return {key: t / norm.view(-1, *([1] * (t.dim() - 1))) for key, t in clean.items()}


def at_perturbation(body, task, emb, clean_pred, yb, opts) -> dict[int, torch.Tensor]:
    """eps times the normalised gradient of the supervised loss at every layer's logits."""
    hook, pred = _leaves(body, emb.detach())
    return {key: opts.adv_eps * u for key, u in unit_over_layers(_grads(task.loss(pred, yb), hook.leaves)).items()}


def vat_perturbation(body, task, emb, clean_pred, yb, opts) -> dict[int, torch.Tensor]:
    """Power iteration over all layers' logits for the direction that most changes the prediction (labels unused)."""
    categorical = not yb.is_floating_point()
    base = emb.detach()
    hook, _ = _leaves(body, base)
    d = {key: torch.randn_like(leaf) for key, leaf in hook.leaves.items()}
    for _ in range(opts.vat_iters):
        d = {key: (opts.vat_xi * u).requires_grad_(True) for key, u in unit_over_layers(d).items()}
        with _hooked(_Logits(fixed=d)):
            div = divergence(clean_pred, body(base), categorical)
        d = _grads(div, d)
    return {key: opts.adv_eps * u for key, u in unit_over_layers(d).items()}


def toward_other_examples(direction: dict[int, torch.Tensor], logits: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    """The interpretable variants' restriction (iAT / iVAT): ``direction`` projected
    onto the unit differences between this example's attention and every other
    example's in the batch, r_b = sum_b' <g_b, u_bb'> u_bb' with u_bb' =
    (a_b - a_b') / ||a_b - a_b'|| over all layers' logits. A perturbation can then
    only move a sentence's attention toward or away from the others', never in a
    direction no example takes. Computed from Gram matrices (no B x B x M tensor)."""
    keys = list(direction)
    a = torch.cat([logits[key].flatten(1) for key in keys], 1).double()  # (B, M)
    g = torch.cat([direction[key].detach().flatten(1) for key in keys], 1).double()
    gram = a @ a.T
    sq = gram.diagonal()
    norm = (sq[:, None] + sq[None, :] - 2 * gram).clamp_min(0).sqrt()
    ga = g @ a.T  # <g_b, a_b'>
    alpha = (ga.diagonal()[:, None] - ga) / norm.clamp_min(TINY)  # <g_b, u_bb'>
    c = torch.where(norm > TINY, alpha / norm.clamp_min(TINY), torch.zeros_like(alpha))
    r = c.sum(1, keepdim=True) * a - c @ a  # sum_b' c_bb' (a_b - a_b')
    out, start = {}, 0
    for key in keys:
        size = direction[key][0].numel()
        out[key] = r[:, start:start + size].view_as(direction[key]).to(direction[key].dtype)
        start += size
    return out


def iat_perturbation(body, task, emb, clean_pred, yb, opts) -> dict[int, torch.Tensor]:
    """Attention iAT: the loss gradient at the logits, restricted to differences between examples' attention."""
    hook, pred = _leaves(body, emb.detach())
    g = toward_other_examples(_grads(task.loss(pred, yb), hook.leaves), hook.logits)
    return {key: opts.adv_eps * u for key, u in unit_over_layers(g).items()}


def ivat_perturbation(body, task, emb, clean_pred, yb, opts) -> dict[int, torch.Tensor]:
    """Attention iVAT: VAT's power-iteration direction, restricted the same way (labels unused)."""
    hook, _ = _leaves(body, emb.detach())
    d = vat_perturbation(body, task, emb, clean_pred, yb, opts)
    return {key: opts.adv_eps * u for key, u in unit_over_layers(toward_other_examples(d, hook.logits)).items()}


def at_term(body, task, emb, r, clean_pred, yb) -> torch.Tensor:
    with _hooked(_Logits(fixed=r)):
        return task.loss(body(emb), yb)


def vat_term(body, task, emb, r, clean_pred, yb) -> torch.Tensor:
    with _hooked(_Logits(fixed=r)):
        return divergence(clean_pred, body(emb), not yb.is_floating_point())


def perturbed(body, r: dict[int, torch.Tensor], emb: torch.Tensor) -> torch.Tensor:
    """The body's prediction with every attention layer's logits moved by ``r``."""
    with _hooked(_Logits(fixed=r)):
        return body(emb)
