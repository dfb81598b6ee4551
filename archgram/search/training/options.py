"""How a trial trains: ``TrainOptions`` (schedule, warm-up, weight decay,
adversarial training, ...), the optimizers, and ``--train-option`` words ->
the ``train_options`` dict.

A bare method name (``at``, ``vat``) switches adversarial training on; every
other word is ``KEY=VALUE`` for a ``TrainOptions`` field (``adv_eps=0.1``,
``schedule=constant``), its value read by the field's type.
``TrainOptions.from_dict`` then checks names and ranges, so the CLI and Python
callers share one set of rules.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch

from archgram.errors import ArchgramError
from archgram.registry import Registry, did_you_mean

_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _coerce(key: str, text: str, annotation: str) -> Any:
    """Read ``text`` as the type named by a dataclass field's (string) annotation."""
    value = text.strip()
    kinds = [k.strip() for k in str(annotation).split("|")]
    if "None" in kinds and value.lower() in ("none", "null", ""):
        return None
    try:
        if "bool" in kinds:
            low = value.lower()
            if low in _TRUE + _FALSE:
                return low in _TRUE
            raise ValueError
        if "int" in kinds:
            return int(value)
        if "float" in kinds:
            return float(value)
    except ValueError:
        want = next(k for k in kinds if k != "None")
        raise ArchgramError(f"--train-option {key}={text}: expected a {want}") from None
    return value


def parse_cli(items: list[str] | None) -> dict[str, Any]:
    """``["at", "adv_eps=0.1"]`` -> ``{"adversarial": "at", "adv_eps": 0.1}`` (checked by TrainOptions)."""
    from archgram.search.training.adversarial import METHODS

    types = {f.name: f.type for f in fields(TrainOptions)}
    out: dict[str, Any] = {}
    for item in items or []:
        word = item.strip()
        if "=" not in word:
            if word not in METHODS:
                raise ArchgramError(f"--train-option {item!r}: give a method ({', '.join(METHODS)}) or KEY=VALUE "
                                    f"with KEY one of {', '.join(types)}")
            key, value = "adversarial", word
        else:
            key, text = (p.strip() for p in word.split("=", 1))
            if key not in types:
                hint = did_you_mean(key, types)
                raise ArchgramError(f"--train-option: unknown option '{key}'{hint} (options: {', '.join(types)})")
            value = _coerce(key, text, types[key])
        if key in out and out[key] != value:
            raise ArchgramError(f"--train-option gives {key} twice ({out[key]!r} and {value!r})")
        out[key] = value
    TrainOptions.from_dict(out)  # names and ranges, before anything runs
    return out


@dataclass
class TrainOptions:
    schedule: str = "cosine"  # 'cosine' | 'constant'
    warmup: float = 0.05  # fraction of the run with a linear warm-up (0 to disable)
    weight_decay: float = 0.01
    grad_clip: float | None = 1.0
    momentum: float = 0.9  # sgd only
    latency_repeats: int = 5
    deterministic: bool = True  # cudnn deterministic / no benchmark on CUDA
    #: CPU threads for this call (restored afterwards); None leaves the process
    #: setting. Small models train many times faster on 1 thread per trial than
    #: with several trials' threads fighting over the cores.
    threads: int | None = None
    #: Weight of the auxiliary losses ops leave in ``aux_loss`` (MoE load balance,
    #: Sparsifiner's predictor); 0 ignores them.
    aux_weight: float = 0.01
    #: Adversarial training: None, on the embedding (the stem's output) 'at' / 'vat',
    #: or on every attention layer's logits 'attention_at' (S74) / 'attention_vat'
    #: (S75); see archgram/search/training/adversarial.py and attention_adversarial.py.
    adversarial: str | None = None
    adv_eps: float = 0.05  # perturbation size, a fraction of each example's embedding norm
    adv_weight: float = 1.0  # weight of the adversarial loss term
    vat_xi: float = 1e-3  # VAT: power-iteration step, a fraction of the embedding norm
    vat_iters: int = 1  # VAT: power iterations

    @classmethod
    def from_dict(cls, options: dict[str, Any] | None) -> TrainOptions:
        options = dict(options or {})
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise ArchgramError(f"unknown train option(s) {', '.join(unknown)}; known: {', '.join(names)}")
        opts = cls(**options)
        if opts.schedule not in ("cosine", "constant"):
            raise ArchgramError(f"train option schedule must be 'cosine' or 'constant', got {opts.schedule!r}")
        if opts.threads is not None and opts.threads < 1:
            raise ArchgramError(f"train option threads must be at least 1, got {opts.threads}")
        if not 0 <= opts.warmup < 1:
            raise ArchgramError(f"train option warmup is a fraction in [0, 1), got {opts.warmup}")
        if opts.adversarial is not None:
            from archgram.search.training.adversarial import get_method

            get_method(opts.adversarial)
            for name, ok, want in (("adv_eps", opts.adv_eps > 0, "positive"), ("adv_weight", opts.adv_weight >= 0, "0 or more"),
                                   ("vat_xi", opts.vat_xi > 0, "positive"), ("vat_iters", opts.vat_iters >= 1, "at least 1")):
                if not (ok and math.isfinite(getattr(opts, name))):
                    raise ArchgramError(f"train option {name} must be {want}, got {getattr(opts, name)}")
        return opts

    def factor(self, progress: float) -> float:
        """Learning-rate multiplier at ``progress`` in [0, 1] of the run."""
        progress = min(max(progress, 0.0), 1.0)
        if self.warmup and progress < self.warmup:
            return (progress + 1e-3) / (self.warmup + 1e-3)
        if self.schedule == "constant":
            return 1.0
        rest = (progress - self.warmup) / max(1e-9, 1 - self.warmup)
        return 0.5 * (1 + math.cos(math.pi * rest))


#: name -> (params, lr, TrainOptions) -> the optimizer
OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer", entries={
    "adamw": lambda params, lr, o: torch.optim.AdamW(params, lr=lr, weight_decay=o.weight_decay),
    "adam": lambda params, lr, o: torch.optim.Adam(params, lr=lr),
    "sgd": lambda params, lr, o: torch.optim.SGD(params, lr=lr, momentum=o.momentum, weight_decay=o.weight_decay),
})


#: optimizer settings of studies written before they were recorded
LEGACY_TRAINING = {"lr": 1e-3, "optimizer": "adamw"}


def training_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The optimizer settings (lr, optimizer) a trial config or a study's stored
    "training" record carries, with the old defaults for older studies."""
    return {"lr": float(config.get("lr", LEGACY_TRAINING["lr"])),
            "optimizer": config.get("optimizer", LEGACY_TRAINING["optimizer"])}


def check_training(lr: Any, optimizer: str, lr_name: str = "learning rate") -> None:
    """Raise ArchgramError for an unknown optimizer or a learning rate that is not a
    positive finite number (``lr_name`` names it as the caller's user knows it)."""
    OPTIMIZERS.get(optimizer)
    if isinstance(lr, bool) or not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ArchgramError(f"{lr_name} must be a positive number, got {lr}")
