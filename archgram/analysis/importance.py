"""Head importance by ablation (Michel et al. 2019, "Are Sixteen Heads Really
Better than One?"): mask one head at a time (its output zeroed before the
output projection) and measure the change in validation loss and metric."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from archgram.analysis.capture import attention_layers, capture, heads_of
from archgram.search.scoring import pad


@dataclass
class Importance:
    base_loss: float
    base_metric: float
    metric_name: str
    #: layer -> per head (loss with the head masked - base loss); higher: more important
    loss_delta: dict[str, list[float]] = field(default_factory=dict)
    #: layer -> per head (base metric - metric with the head masked)
    metric_drop: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"base_loss": self.base_loss, "base_metric": self.base_metric, "metric": self.metric_name,
                "loss_delta": self.loss_delta, "metric_drop": self.metric_drop}


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Predictions on ``x`` in batches of the size the body was typed for."""
    model.eval()
    outs = [model(pad(x[i:i + batch_size], batch_size))[: len(x[i:i + batch_size])].float() for i in range(0, len(x), batch_size)]
    return torch.cat(outs)


def scores(model, task, x, y, batch_size: int) -> tuple[float, float]:
    """(validation loss, metric)."""
    pred = predict(model, x, batch_size)
    return float(task.loss(pred, y)), float(task.metric(pred, y))


def head_importance(model: nn.Module, task, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Importance:
    """Ablate every head of every attention layer, one at a time."""
    base_loss, base_metric = scores(model, task, x, y, batch_size)
    imp = Importance(base_loss, base_metric, task.metric_name)
    for name, op in attention_layers(model):
        imp.loss_delta[name], imp.metric_drop[name] = [], []
        for h in range(heads_of(op)):
            mask = torch.ones(heads_of(op))
            mask[h] = 0
            with capture(model, maps=False, head_mask={name: mask}):
                loss, metric = scores(model, task, x, y, batch_size)
            imp.loss_delta[name].append(loss - base_loss)
            imp.metric_drop[name].append(base_metric - metric)
    return imp
