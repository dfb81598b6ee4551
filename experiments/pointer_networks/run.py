"""Pointer Networks (S03) small reproduction: sorting and planar convex hull with
archgram's Ptr-Net decoder on a one-layer transformer encoder.

    PYTHONPATH=$PWD python experiments/pointer_networks/run.py [--steps 1500] [--seed 0]

The encoder stands in for a searched body (a linear embedding and one pre-norm
transformer encoder layer); the head is the task's pointer decoder. Three ways
to train the same model, all scored free-running (greedy) on the validation set:

  teacher_forced  the task's ``teaching`` feeds the true previous pointers, as
                  in the paper and as archgram's evaluator does for these tasks
  free_running    every step reads its own argmax in training too (what the
                  ``pointer_head`` op gets inside a grammar, which sees no targets)
  no_feedback     every step reads the "go" vector, never a previous pointer (an
                  ablation of the mechanism that the fixed-query head lacked)

Metrics: sort, share of output positions right; convex-hull, share of whole
hull sequences right (the paper's accuracy).
"""
from __future__ import annotations

import argparse
import contextlib
import json

import torch
from torch import nn

from archgram.tasks import get_task

MODES = ("teacher_forced", "free_running", "no_feedback")


class Encoder(nn.Module):
    def __init__(self, dim_in: int, width: int = 64):
        super().__init__()
        self.embed = nn.Linear(dim_in, width)
        self.layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True, norm_first=True)

    def forward(self, x):
        return self.layer(self.embed(x))


def without_feedback(head):
    """Replace ``head.decode`` by one whose every step reads the go vector."""
    def decode(h, pointers=None):
        keys = head.keys(h)
        d = torch.tanh(head.init(h.mean(dim=1)))
        c = torch.zeros_like(d)
        go = head.go.expand(h.shape[0], -1)
        rows = []
        for _ in range(head.outputs or h.shape[1]):
            d, c = head.cell(go, (d, c))
            rows.append(head.logits(keys, d))
        return torch.stack(rows, dim=1)

    head.decode = decode


def run(task_name: str, mode: str, steps: int, seed: int) -> float:
    torch.manual_seed(seed)
    task = get_task(task_name, length=6, n_train=4000, n_val=500)
    data = task.data(seed)
    model = nn.Sequential(Encoder(data.x_train.shape[-1]), task.head((64, 6, 64)))
    if mode == "no_feedback":
        without_feedback(model[1])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, data.n_train, (64,))
        x, y = data.x_train[idx], data.y_train[idx]
        teach = task.teaching(model, y) if mode == "teacher_forced" else contextlib.nullcontext()
        opt.zero_grad()
        with teach:
            loss = task.loss(model(x), y)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return task.metric(model(data.x_val), data.y_val)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tasks", nargs="+", default=["sort", "convex-hull"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = {name: {mode: run(name, mode, args.steps, args.seed) for mode in MODES} for name in args.tasks}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
