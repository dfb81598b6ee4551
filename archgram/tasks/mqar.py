"""Multi-query associative recall (MQAR), as in Zoology (Arora, Eyuboglu et al. 2023).

Each sequence starts with ``kv_pairs`` key-value pairs (keys from the lower half
of the vocabulary, values from the upper half, all distinct within a sequence),
followed by a query region in which every key appears once more, at an even
offset drawn from Zoology's power law over gaps (most queries come soon after
the context). At each query position the model must output the value that was
paired with that key. Other query-region positions hold random value tokens and
are not scored (target -100, ignored by loss and metric).

The generator is written from the description of Zoology's ``multiquery_ar``;
one difference on purpose: fillers are drawn from the value half only, so a key
token in the query region is always a real query.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from archgram.errors import ArchgramError
from archgram.shapes import Shape
from archgram.tasks.base import Recipe, Task, TaskData, accuracy, register_task
from archgram.tasks.heads import TokenEmbedding, TokenHead

IGNORE = -100


def generate_mqar(
    n: int, vocab: int, seq_len: int, kv_pairs: int, rng: np.random.Generator, power_a: float = 0.01
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs (n, seq_len) int64, targets (n, seq_len) int64 with -100 off-query)."""
    context = 2 * kv_pairs
    space = (seq_len - context) // 2
    half = vocab // 2
    # k distinct keys in [1, half), k distinct values in [half, vocab): argsort of noise is a random permutation.
    keys = 1 + np.argsort(rng.random((n, half - 1)), axis=1)[:, :kv_pairs]
    values = half + np.argsort(rng.random((n, vocab - half)), axis=1)[:, :kv_pairs]
    # Query slots: k distinct gaps in [0, space) drawn with Zoology's power law p(g) ~ (g+1)^(a-1),
    # sampled without replacement by Gumbel top-k.
    logp = (power_a - 1) * np.log(np.arange(1, space + 1))
    gumbel = -np.log(-np.log(rng.random((n, space))))
    gaps = np.argsort(-(logp + gumbel), axis=1)[:, :kv_pairs]
    inputs = half + rng.integers(0, vocab - half, size=(n, seq_len))
    inputs[:, 0:context:2] = keys
    inputs[:, 1:context:2] = values
    qpos = context + 2 * gaps
    np.put_along_axis(inputs, qpos, keys, axis=1)
    targets = np.full((n, seq_len), IGNORE, dtype=np.int64)
    np.put_along_axis(targets, qpos, values, axis=1)
    return inputs.astype(np.int64), targets


@register_task
class MQAR(Task):
    """Token task: embedding stem -> body (B, N, d_model) -> per-token vocabulary logits."""

    name = "mqar"
    # The 2-layer softmax transformer (references/mqar.pcfg) reaches 0.992 validation accuracy (seed 0).
    recipe = Recipe(optimizer="adamw", lr=3e-3, batch_size=32, budget="1000steps")
    metric_name = "accuracy"
    description = "Zoology multi-query associative recall; accuracy at query positions"

    def __init__(self, vocab: int = 64, seq_len: int = 64, kv_pairs: int = 4, d_model: int = 32,
                 n_train: int = 4000, n_val: int = 500, power_a: float = 0.01, n_test: int | None = None):
        super().__init__()
        if seq_len % 2 or 4 * kv_pairs > seq_len:
            raise ArchgramError(f"mqar: need an even seq_len >= 4*kv_pairs, got seq_len={seq_len}, kv_pairs={kv_pairs}")
        if kv_pairs >= vocab // 2:
            raise ArchgramError(f"mqar: vocab {vocab} too small for {kv_pairs} distinct keys")
        self.vocab, self.seq_len, self.kv_pairs, self.d_model = vocab, seq_len, kv_pairs, d_model
        self.n_train, self.n_val, self.power_a = n_train, n_val, power_a
        self.n_test = n_val if n_test is None else n_test

    def config(self) -> dict:
        return {"vocab": self.vocab, "seq_len": self.seq_len, "kv_pairs": self.kv_pairs, "d_model": self.d_model,
                "n_train": self.n_train, "n_val": self.n_val, "n_test": self.n_test, "power_a": self.power_a}

    def generate(self, seed: int) -> TaskData:
        out = []
        for split, n in ((0, self.n_train), (1, self.n_val), (2, self.n_test)):
            rng = np.random.default_rng([int(seed), split])
            x, y = generate_mqar(n, self.vocab, self.seq_len, self.kv_pairs, rng, self.power_a)
            out += [torch.from_numpy(x), torch.from_numpy(y)]
        return TaskData(*out, info={"ignore_index": IGNORE})

    def body_input_shape(self, batch_size: int) -> Shape:
        return (batch_size, self.seq_len, self.d_model)

    def output_target(self, batch_size: int) -> tuple:
        return (batch_size, self.seq_len, None)

    def stem(self, body_input_shape: Shape) -> nn.Module:
        return TokenEmbedding(self.vocab, body_input_shape[-1])

    def head(self, body_output_shape: Shape) -> nn.Module:
        return TokenHead(body_output_shape, self.vocab, tokens=self.seq_len)

    def loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(pred.flatten(0, 1), y.flatten(), ignore_index=IGNORE)

    def metric(self, pred: torch.Tensor, y: torch.Tensor) -> float:
        return accuracy(pred, y, ignore_index=IGNORE)

    def chance(self) -> float:
        return 1.0 / (self.vocab - self.vocab // 2)  # a guess among the value tokens
