"""One derivation on one task as a model: the task's stem, the compiled body and the task's head.

``build_model`` types the derivation for the task's input shape first, so a
derivation that does not fit the task raises ShapeError before anything is built.
"""
from __future__ import annotations

import torch
from torch import nn

from archgram.errors import DerivationError, ShapeError
from archgram.grammar.derivation import Derivation
from archgram.tasks import Task
from archgram.tasks.heads import module_flops


class TaskModel(nn.Module):
    """stem -> compiled network (body + task head)."""

    def __init__(self, stem: nn.Module, network: nn.Module):
        super().__init__()
        self.stem = stem
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(self.stem(x))


def build_model(derivation: Derivation, task: Task, batch_size: int) -> tuple[TaskModel, Derivation, int]:
    """(model, derivation typed for the task's input, forward FLOPs of one batch).
    Raises ShapeError/CompileError when the derivation does not fit the task."""
    import archgram
    from archgram.grammar.edit import cost

    shape = tuple(task.body_input_shape(batch_size))
    d = derivation.copy()
    d.input_shape = shape
    try:
        out_shape = d.infer_shapes()
    except (ShapeError, DerivationError) as exc:
        raise ShapeError(f"derivation {derivation.hash()} does not type-check for task '{task.name}' input {shape}: {exc}") from None
    task.check_body_output(tuple(out_shape))
    stem = task.stem(shape)
    head = task.head(tuple(out_shape))
    network = archgram.compile(d, head=head)
    flops = int(cost(d.root)[2]) + module_flops(stem) + module_flops(head)
    return TaskModel(stem, network), d, flops
