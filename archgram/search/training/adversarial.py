"""Adversarial (AT) and virtual adversarial (VAT) training on the embedding.

AT (Goodfellow et al. 2015; on word embeddings Miyato et al. 2017; for attention
models Kitada & Iyatomi 2021, catalog S74) adds the loss at the embedding moved
one normalised gradient step uphill, ``r = eps * g / ||g||`` with ``g`` the
gradient of the supervised loss at the embedding (a fast-gradient step).

VAT (Miyato et al. 2018; for attention models Kitada & Iyatomi 2022, S75) needs
no labels: it finds the direction that most changes the model's own prediction,
``KL(p(e) || p(e + r))``, by power iteration from a random direction, and adds
that divergence at ``r = eps * d / ||d||`` to the loss (the clean prediction is
held constant).

The embedding is the stem's output (the searched body's input): token
embeddings for token tasks, the raw input for tasks whose stem is the identity.
``eps`` and ``xi`` are fractions of each example's embedding norm, so one
default serves tasks whose inputs live on different scales. Non-finite
gradients count as zero, so a perturbation is always finite (the evaluator's
NaN check still catches a diverging loss).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from archgram.errors import ArchgramError
from archgram.registry import Registry
from archgram.search.training import attention_adversarial as aa
from archgram.search.training.divergence import TINY, divergence


def _norms(t: torch.Tensor) -> torch.Tensor:
    """Per-example L2 norm over every axis but the first, broadcastable to ``t``."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def unit(t: torch.Tensor) -> torch.Tensor:
    """Per-example unit vectors (zero where ``t`` is zero or not finite)."""
    t = torch.nan_to_num(t.detach(), nan=0.0, posinf=0.0, neginf=0.0)
    return t / _norms(t).clamp_min(TINY)


def scaled(direction: torch.Tensor, emb: torch.Tensor, eps: float) -> torch.Tensor:
    """``eps * ||emb_i|| * unit(direction_i)``: a perturbation ``eps`` of each example's size."""
    return eps * _norms(emb.detach()) * unit(direction)


def _split(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    stem, body = getattr(model, "stem", None), getattr(model, "network", None)
    if not isinstance(stem, nn.Module) or not isinstance(body, nn.Module):
        raise ArchgramError("adversarial training needs a model with a stem and a network (the evaluator's TaskModel)")
    return stem, body


def _embed(stem: nn.Module, xb: torch.Tensor) -> torch.Tensor:
    emb = stem(xb)
    if not emb.is_floating_point():
        raise ArchgramError(f"adversarial training perturbs a float embedding; the stem gave {emb.dtype}")
    return emb if emb.requires_grad else emb.detach().requires_grad_(True)


# ------------------------------------------------------------------ AT
def at_perturbation(body, task, emb, clean_pred, yb, opts) -> torch.Tensor:
    """Fast-gradient step on the supervised loss at the embedding (graph kept for the update)."""
    loss = task.loss(clean_pred, yb)
    (g,) = torch.autograd.grad(loss, emb, retain_graph=True)
    return scaled(g, emb, opts.adv_eps)


def at_term(body, task, emb, r, clean_pred, yb) -> torch.Tensor:
    return task.loss(body(emb + r), yb)


# ----------------------------------------------------------------- VAT
def vat_perturbation(body, task, emb, clean_pred, yb, opts) -> torch.Tensor:
    """Power iteration for the direction that most changes the prediction (labels unused)."""
    categorical = not yb.is_floating_point()
    base = emb.detach()
    d = torch.randn_like(base)
    for _ in range(opts.vat_iters):
        d = scaled(d, base, opts.vat_xi).requires_grad_(True)
        div = divergence(clean_pred, body(base + d), categorical)
        (d,) = torch.autograd.grad(div, d)
    return scaled(d, emb, opts.adv_eps)


def vat_term(body, task, emb, r, clean_pred, yb) -> torch.Tensor:
    return divergence(clean_pred, body(emb + r), not yb.is_floating_point())


# -------------------------------------------------------------- registry
@dataclass(frozen=True)
class AdversarialMethod:
    name: str
    refs: tuple[str, ...]
    #: (body, task, emb, clean prediction, y, options) -> perturbation r (no graph)
    perturb: Callable[..., torch.Tensor]
    #: (body, task, emb, r, clean prediction, y) -> the added loss term
    term: Callable[..., torch.Tensor]
    doc: str


#: Every adversarial training method by name (``--train-option at``).
_METHODS = (
    AdversarialMethod("at", ("S74",), at_perturbation, at_term,
                      "adversarial training: supervised loss at e + eps*g/||g||"),
    AdversarialMethod("vat", ("S75",), vat_perturbation, vat_term,
                      "virtual adversarial training: KL(p(e) || p(e + r)) by power iteration, no labels"),
    # Adversarial training on the attention logits (S74, S75): attention_adversarial.py.
    AdversarialMethod("attention_at", ("S74",), aa.at_perturbation, aa.at_term,
                      "Attention AT: supervised loss with every attention layer's logits moved eps*g/||g||"),
    AdversarialMethod("attention_vat", ("S75",), aa.vat_perturbation, aa.vat_term,
                      "Attention VAT: KL(p || p(logits + r)) over the attention logits by power iteration, no labels"),
    AdversarialMethod("attention_iat", ("S74",), aa.iat_perturbation, aa.at_term,
                      "Attention iAT: Attention AT along differences between examples' attention"),
    AdversarialMethod("attention_ivat", ("S75",), aa.ivat_perturbation, aa.vat_term,
                      "Attention iVAT: Attention VAT along differences between examples' attention"),
)
METHODS: Registry[AdversarialMethod] = Registry("adversarial training method", entries={m.name: m for m in _METHODS})


def get_method(name: str) -> AdversarialMethod:
    return METHODS.get(name)


def perturbation(model: nn.Module, task: Any, xb: torch.Tensor, yb: torch.Tensor, opts: Any
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(embedding, clean prediction, perturbation r) of one batch under ``opts.adversarial``."""
    method = get_method(opts.adversarial)
    stem, body = _split(model)
    emb = _embed(stem, xb)
    clean_pred = body(emb)
    return emb, clean_pred, method.perturb(body, task, emb, clean_pred, yb, opts)


def training_loss(model: nn.Module, task: Any, xb: torch.Tensor, yb: torch.Tensor, opts: Any) -> torch.Tensor:
    """Supervised loss plus ``adv_weight`` times the method's loss at the perturbed embedding."""
    method = get_method(opts.adversarial)
    emb, clean_pred, r = perturbation(model, task, xb, yb, opts)
    loss = task.loss(clean_pred, yb)
    return loss + opts.adv_weight * method.term(_split(model)[1], task, emb, r, clean_pred, yb)
