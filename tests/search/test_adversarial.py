"""Adversarial (AT, S74) and virtual adversarial (VAT, S75) training on the embedding:
the perturbation is the one the papers define (checked against hand-derived
directions for linear models), it raises the loss before the update more than a
random perturbation of the same size, training runs, and bad options are refused."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from archgram.errors import ArchgramError
from archgram.grammar.model import Grammar
from archgram.search.evaluator import TaskModel, build_model, evaluate
from archgram.search.training import parse_cli, perturbation, training_loss
from archgram.search.training.adversarial import divergence, scaled, unit
from archgram.search.training.options import TrainOptions
from archgram.tasks import get_task

B = 32
MLP = "net : im2col(k=8, s=8, p=0) linear(out=32) relu linear(out=32)\n"


@pytest.fixture(scope="module")
def digits():
    task = get_task("digits")
    task.data(0)
    return task


def _model(task, text=MLP, batch=B):
    d = Grammar.from_text(text).sample(task.body_input_shape(batch), seed=0, target=task.output_target(batch))
    torch.manual_seed(0)
    return build_model(d, task, batch)[0]


class _Regression:
    """A task stand-in with a mean squared error loss (float targets)."""

    @staticmethod
    def loss(pred, y):
        return F.mse_loss(pred, y)


def _linear_model(d: int = 5) -> TaskModel:
    torch.manual_seed(1)
    return TaskModel(nn.Identity(), nn.Linear(d, 1))


def _random_like(r: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(r.shape, generator=g)
    return unit(noise) * r.flatten(1).norm(dim=1).view(-1, *([1] * (r.dim() - 1)))


@pytest.mark.catalog("S74")
def test_at_direction_is_the_normalised_loss_gradient_of_a_linear_model():
    """For f(e) = w.e + b and a squared error, dL/de_i = 2/B (f_i - y_i) w: AT moves each
    example by eps*||e_i|| along sign(f_i - y_i) * w/||w||."""
    model = _linear_model()
    e, y = torch.randn(8, 5), torch.randn(8, 1)
    opts = TrainOptions.from_dict({"adversarial": "at", "adv_eps": 0.1})
    _, _, r = perturbation(model, _Regression, e, y, opts)
    w = model.network.weight.detach()[0]
    sign = torch.sign(model.network(e).detach() - y)
    want = 0.1 * e.norm(dim=1, keepdim=True) * sign * w / w.norm()
    torch.testing.assert_close(r, want)


@pytest.mark.catalog("S75")
def test_vat_direction_is_the_top_eigenvector_for_a_linear_model():
    """For a linear model the prediction changes most along w (the Hessian of the squared
    divergence is 2 w w^T), so one power iteration from any start lands on +-w."""
    model = _linear_model()
    e = torch.randn(8, 5)
    opts = TrainOptions.from_dict({"adversarial": "vat", "adv_eps": 0.1})
    torch.manual_seed(3)
    _, _, r = perturbation(model, _Regression, e, torch.zeros(8, 1), opts)
    w = model.network.weight.detach()[0]
    cos = (r @ w) / (r.norm(dim=1) * w.norm())
    torch.testing.assert_close(cos.abs(), torch.ones(8), atol=1e-4, rtol=0)
    torch.testing.assert_close(r.norm(dim=1), 0.1 * e.norm(dim=1))


@pytest.mark.catalog("S74")
@pytest.mark.parametrize("task_name", ["digits", "mqar"])
def test_at_perturbation_increases_the_loss_before_the_update(task_name, digits):
    """Before any parameter update, the loss at e + r_adv exceeds the clean loss and the
    loss at a random perturbation of the same size (token embeddings for MQAR)."""
    if task_name == "digits":
        task, model = digits, _model(digits)
    else:
        task = get_task("mqar", vocab=16, seq_len=16, kv_pairs=2, d_model=16, n_train=64, n_val=32)
        model = _model(task, "net : linear(out=16) relu linear(out=16)\n")
    data = task.data(0)
    xb, yb = data.x_train[:B], data.y_train[:B]
    opts = TrainOptions.from_dict({"adversarial": "at", "adv_eps": 0.02})
    emb, clean_pred, r = perturbation(model, task, xb, yb, opts)
    with torch.no_grad():
        clean = float(task.loss(clean_pred, yb))
        adv = float(task.loss(model.network(emb + r), yb))
        rand = max(float(task.loss(model.network(emb + _random_like(r, s)), yb)) for s in range(5))
    assert adv > clean and adv > rand, (clean, adv, rand)
    assert all(p.grad is None for p in model.parameters())  # nothing was updated or accumulated


@pytest.mark.catalog("S75")
def test_vat_perturbation_increases_the_divergence_and_ignores_labels(digits):
    """VAT's direction changes the model's prediction more than random directions of the
    same size, and is computed without the labels (shuffled labels give the same r)."""
    model = _model(digits)
    data = digits.data(0)
    xb, yb = data.x_train[:B], data.y_train[:B]
    opts = TrainOptions.from_dict({"adversarial": "vat", "adv_eps": 0.05})
    torch.manual_seed(7)
    emb, clean_pred, r = perturbation(model, digits, xb, yb, opts)
    torch.manual_seed(7)
    _, _, r_shuffled = perturbation(model, digits, xb, yb.flip(0), opts)
    torch.testing.assert_close(r, r_shuffled)
    with torch.no_grad():
        vat = float(divergence(clean_pred, model.network(emb + r), categorical=True))
        rand = max(float(divergence(clean_pred, model.network(emb + _random_like(r, s)), True)) for s in range(5))
    assert vat > 2 * rand > 0, (vat, rand)


@pytest.mark.catalog("S74", "S75")
def test_training_loss_adds_the_adversarial_term_and_reaches_every_parameter(digits):
    model = _model(digits)
    data = digits.data(0)
    xb, yb = data.x_train[:B], data.y_train[:B]
    with torch.no_grad():
        clean = float(digits.loss(model(xb), yb))
    for method in ("at", "vat"):
        opts = TrainOptions.from_dict({"adversarial": method, "adv_weight": 1.0})
        loss = training_loss(model, digits, xb, yb, opts)
        assert float(loss.detach()) > clean  # clean + a positive term
        model.zero_grad()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_perturbation_is_finite_for_zero_and_nan_gradients():
    g = torch.tensor([[0.0, 0.0], [float("nan"), 1.0], [float("inf"), 2.0]])
    e = torch.ones(3, 2)
    r = scaled(g, e, 0.1)
    assert torch.isfinite(r).all()
    torch.testing.assert_close(r[0], torch.zeros(2))
    torch.testing.assert_close(r[1].norm(), torch.tensor(0.1 * math.sqrt(2)))


@pytest.mark.catalog("S74", "S75")
@pytest.mark.parametrize("method", ["at", "vat"])
def test_evaluate_trains_with_adversarial_options(method, digits):
    d = Grammar.from_text(MLP).sample(digits.body_input_shape(B), seed=0, target=digits.output_target(B))
    plain = evaluate(d, digits, "30steps", seed=0, lr=3e-3, train_options={"threads": 1})
    adv = evaluate(d, digits, "30steps", seed=0, lr=3e-3, train_options={"threads": 1, "adversarial": method})
    assert adv.ok, adv.message
    assert adv.steps == 30 and math.isfinite(adv.train_loss) and adv.score > 0.2
    assert adv.train_loss != plain.train_loss  # the extra term changed training


def test_cli_words_become_checked_train_options():
    assert parse_cli(["vat", "adv_eps=0.1", "vat_iters=2", "schedule=constant", "grad_clip=none"]) == {
        "adversarial": "vat", "adv_eps": 0.1, "vat_iters": 2, "schedule": "constant", "grad_clip": None}
    assert parse_cli(["deterministic=false"]) == {"deterministic": False}
    for words, match in ((["fgsm"], "give a method"), (["adv_eps=big"], "expected a float"),
                         (["at", "adv_epz=0.1"], "did you mean 'adv_eps'"), (["at", "adv_eps=-1"], "adv_eps must be positive"),
                         (["at", "vat"], "adversarial twice"), (["vat_iters=0", "vat"], "at least 1")):
        with pytest.raises(ArchgramError, match=match):
            parse_cli(words)
    with pytest.raises(ArchgramError, match="unknown adversarial training method 'vta'; did you mean 'vat'"):
        TrainOptions.from_dict({"adversarial": "vta"})


# ------------------------------------------------ adversarial training on attention (S74, S75)
ATTN = "net : attention(heads=2, causal=true, position=rope) linear(out=16) attention(heads=2, causal=true)\n"


def _attention_model():
    task = get_task("mqar", vocab=16, seq_len=16, kv_pairs=2, d_model=16, n_train=64, n_val=32)
    model = _model(task, ATTN, batch=8)
    data = task.data(0)
    return task, model, data.x_train[:8], data.y_train[:8]


def _random_over_layers(r: dict, seed: int) -> dict:
    """Random perturbation with each example's norm over all layers equal to r's."""
    from archgram.search.training.attention_adversarial import unit_over_layers

    g = torch.Generator().manual_seed(seed)
    noise = unit_over_layers({k: torch.randn(t.shape, generator=g) for k, t in r.items()})
    size = sum(t.flatten(1).square().sum(1) for t in r.values()).sqrt()
    return {k: t * size.view(-1, 1, 1, 1) for k, t in noise.items()}


@pytest.mark.catalog("S74")
def test_attention_at_perturbs_every_attention_layers_logits_uphill():
    """Attention AT (Kitada & Iyatomi): the perturbation lives on the attention
    scores of each attention layer, not the embedding; adding it raises the loss
    above the clean loss and above random logit perturbations of the same size,
    before any update; each example's perturbation over all layers has norm eps."""
    from archgram.search.training.attention_adversarial import perturbed

    task, model, xb, yb = _attention_model()
    opts = TrainOptions.from_dict({"adversarial": "attention_at", "adv_eps": 2.0})
    emb, clean_pred, r = perturbation(model, task, xb, yb, opts)
    assert len(r) == 2 and all(t.shape == (8, 2, 16, 16) for t in r.values())  # two layers, (B, H, N, N) logits
    norms = sum(t.flatten(1).square().sum(1) for t in r.values()).sqrt()
    torch.testing.assert_close(norms, torch.full((8,), 2.0))
    with torch.no_grad():
        clean = float(task.loss(clean_pred, yb))
        adv = float(task.loss(perturbed(model.network, r, emb), yb))
        rand = max(float(task.loss(perturbed(model.network, _random_over_layers(r, s), emb), yb)) for s in range(5))
    assert adv - clean > 1e-3 and adv - clean > 10 * abs(rand - clean), (clean, adv, rand)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.catalog("S75")
def test_attention_vat_moves_the_prediction_most_and_ignores_labels():
    """Attention VAT: the power-iteration direction over the attention logits
    changes the model's prediction (KL) more than random logit perturbations of
    the same size, and does not read the labels."""
    from archgram.search.training.attention_adversarial import perturbed

    task, model, xb, yb = _attention_model()
    opts = TrainOptions.from_dict({"adversarial": "attention_vat", "adv_eps": 2.0, "vat_iters": 2})
    torch.manual_seed(3)
    emb, clean_pred, r = perturbation(model, task, xb, yb, opts)
    torch.manual_seed(3)
    _, _, r_shuffled = perturbation(model, task, xb, yb.flip(0), opts)
    for key in r:
        torch.testing.assert_close(r[key], r_shuffled[key])
    with torch.no_grad():
        vat = float(divergence(clean_pred, perturbed(model.network, r, emb), True))
        rand = max(float(divergence(clean_pred, perturbed(model.network, _random_over_layers(r, s), emb), True))
                   for s in range(5))
    assert vat > 2 * rand > 0, (vat, rand)


@pytest.mark.catalog("S74", "S75")
def test_attention_adversarial_terms_train_every_parameter_and_need_an_attention_layer(digits):
    task, model, xb, yb = _attention_model()
    with torch.no_grad():
        clean = float(task.loss(model(xb), yb))
    for method in ("attention_at", "attention_vat"):
        loss = training_loss(model, task, xb, yb, TrainOptions.from_dict({"adversarial": method, "adv_eps": 1.0}))
        assert float(loss.detach()) > clean
        model.zero_grad()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    mlp = _model(digits)
    data = digits.data(0)
    with pytest.raises(ArchgramError, match="needs an attention op"):
        training_loss(mlp, digits, data.x_train[:B], data.y_train[:B], TrainOptions.from_dict({"adversarial": "attention_at"}))


def _span_residual(r: dict, logits: dict) -> float:
    """Largest relative distance of an example's perturbation (all layers) from the
    span of its attention-logit differences to the other examples."""
    keys = list(r)
    a = torch.cat([logits[k].flatten(1) for k in keys], 1).double()
    v = torch.cat([r[k].flatten(1) for k in keys], 1).double()
    worst = 0.0
    for b in range(len(a)):
        basis = (a[b] - a[torch.arange(len(a)) != b]).T  # (M, B - 1)
        coef = torch.linalg.lstsq(basis, v[b][:, None]).solution
        worst = max(worst, float((basis @ coef)[:, 0].sub(v[b]).norm() / v[b].norm()))
    return worst


@pytest.mark.catalog("S74", "S75")
def test_attention_iat_and_ivat_move_attention_only_toward_other_examples_attention():
    """The interpretable variants (Attention iAT / iVAT): the perturbation of each
    example lies in the span of the differences between its attention logits and
    the other examples' (plain Attention AT's does not), still raises the loss
    (iAT), and iVAT ignores the labels."""
    from archgram.search.training.attention_adversarial import _leaves, perturbed

    task, model, xb, yb = _attention_model()
    emb = model.stem(xb)
    hook, _ = _leaves(model.network, emb.detach())
    opts = {"adv_eps": 2.0}
    _, clean_pred, r_iat = perturbation(model, task, xb, yb, TrainOptions.from_dict({"adversarial": "attention_iat", **opts}))
    _, _, r_at = perturbation(model, task, xb, yb, TrainOptions.from_dict({"adversarial": "attention_at", **opts}))
    assert _span_residual(r_iat, hook.logits) < 1e-4 < 0.1 < _span_residual(r_at, hook.logits)
    with torch.no_grad():
        assert float(task.loss(perturbed(model.network, r_iat, emb), yb)) > float(task.loss(clean_pred, yb))
    ivat = TrainOptions.from_dict({"adversarial": "attention_ivat", **opts})
    torch.manual_seed(5)
    _, _, r_ivat = perturbation(model, task, xb, yb, ivat)
    torch.manual_seed(5)
    _, _, r_shuffled = perturbation(model, task, xb, yb.flip(0), ivat)
    assert _span_residual(r_ivat, hook.logits) < 1e-4
    for key in r_ivat:
        torch.testing.assert_close(r_ivat[key], r_shuffled[key])
