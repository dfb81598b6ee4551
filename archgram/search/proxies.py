"""Zero-cost proxies: rank untrained architectures by one batch at initialisation.

Each proxy builds the task model (stem, body, head) exactly as the evaluator
does, seeded, and returns a number where higher should mean "trains to a better
validation score". They cost about one training step each, so pre-screening K
candidates per trial costs K steps instead of K trainings. Whether a proxy
ranks well is an empirical question: ``experiments/search_quality/proxies.py``
measures each one's Kendall tau against trained validation scores of real
studies, and the prescreen uses whichever measured best.

Registered proxies (``PROXIES``):

- ``params``: log parameter count (the trivial baseline every proxy must beat);
- ``gradnorm``: log of the L2 norm of the loss gradient over all weights
  (Abdelfattah et al. 2021, "Zero-Cost Proxies for Lightweight NAS");
- ``synflow``: log of sum |theta * dR/dtheta| with all weights made positive
  and an all-ones input, R the summed output (Tanaka et al. 2020);
- ``naswot``: log-determinant of the Hamming-similarity kernel of the binary
  codes of the body output over a batch (Mellor et al. 2021, applied to the
  body's output instead of every ReLU: archgram's ops are not all ReLUs).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from archgram.errors import ArchgramError
from archgram.grammar.derivation import Derivation
from archgram.registry import Registry

ProxyFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, object], float]
PROXIES: Registry[ProxyFn] = Registry("proxy")


def register_proxy(name: str):
    """Function decorator registering a proxy as ``name``."""
    return PROXIES.decorator(lambda fn: name)


def _log(x: float) -> float:
    return math.log(x) if x > 0 and math.isfinite(x) else -math.inf


@register_proxy("params")
def _params(model, x, y, task) -> float:
    return _log(float(sum(p.numel() for p in model.parameters())))


@register_proxy("gradnorm")
def _gradnorm(model, x, y, task) -> float:
    model.train()
    model.zero_grad(set_to_none=True)
    task.loss(model(x), y).backward()
    total = sum(float(p.grad.pow(2).sum()) for p in model.parameters() if p.grad is not None)
    return _log(math.sqrt(total))


@register_proxy("synflow")
def _synflow(model, x, y, task) -> float:
    model.eval()  # BatchNorm would normalise the all-ones input away
    signs = {}
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if p.is_floating_point():
                signs[name] = torch.sign(p)
                p.abs_()
    model.zero_grad(set_to_none=True)
    ones = torch.ones_like(x) if x.is_floating_point() else x  # token inputs stay tokens
    model.double()
    try:
        out = model(ones.double() if ones.is_floating_point() else ones)
        out.sum().backward()
        with torch.no_grad():
            score = sum(float((p * p.grad).abs().sum()) for p in model.parameters() if p.grad is not None)
    finally:
        model.float()
    return _log(score)


@register_proxy("naswot")
def _naswot(model, x, y, task) -> float:
    codes = []

    def grab(module, inputs, output):
        codes.append((inputs[0].detach().flatten(1) > 0).float())

    handle = model.network.head.register_forward_hook(grab)  # the head's input is the body's output
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    c = codes[0]
    kernel = c @ c.t() + (1 - c) @ (1 - c).t()  # agreements between the binary codes of two examples
    sign, logdet = torch.linalg.slogdet(kernel.double())
    return float(logdet) if sign > 0 else -math.inf


def proxy_score(name: str, derivation: Derivation, task, batch_size: int, seed: int = 0, data_seed: int = 0) -> float:
    """Proxy ``name`` of ``derivation`` on ``task`` (one seeded batch of training
    data, weights initialised from ``seed``); -inf for a model that cannot run."""
    from archgram.search.task_model import build_model

    proxy = PROXIES.get(name)
    data = task.data(data_seed)
    idx = torch.randperm(data.n_train, generator=torch.Generator().manual_seed(seed))[:batch_size]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model, _, _ = build_model(derivation, task, batch_size)
            value = proxy(model, data.x_train[idx], data.y_train[idx], task)
        except (ArchgramError, RuntimeError, ValueError):
            return -math.inf
    return value if not math.isnan(value) else -math.inf
