"""Planar convex hull with a pointer decoder (Vinyals et al. 2015, Pointer Networks;
catalog S03, the paper's first geometric task).

Input: N points uniform in the unit square, a sequence (B, N, 2). Target, as in
the paper: the indices of the hull's vertices in counter-clockwise order,
starting from the vertex with the lowest index. The paper ends the sequence with
an end symbol; here the step after the last vertex points back at the first one
(closing the polygon, which plays the end symbol's part) and the steps after
that are ``IGNORE``. The head emits N + 1 pointers, enough for a hull of all N
points plus the closing one. The metric is the paper's accuracy: the share of
examples whose whole output sequence is right.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from archgram.shapes import Shape
from archgram.tasks.base import Recipe, register_task
from archgram.tasks.sort import PointerTask

IGNORE = -100


def _cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def convex_hull(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the hull vertices, counter-clockwise from the lowest index (Andrew's monotone chain).

    Points on a hull edge (collinear) are not vertices."""
    order = sorted(range(len(points)), key=lambda i: points[i])
    if len(order) < 3:
        return sorted(order)

    def chain(idx: list[int]) -> list[int]:
        out: list[int] = []
        for i in idx:
            while len(out) >= 2 and _cross(points[out[-2]], points[out[-1]], points[i]) <= 0:
                out.pop()
            out.append(i)
        return out[:-1]

    hull = chain(order) + chain(order[::-1])  # lower chain left to right, upper right to left: ccw
    start = hull.index(min(hull))
    return hull[start:] + hull[:start]


def hull_target(points: list[tuple[float, float]], steps: int) -> list[int]:
    """The pointer sequence: the hull, then back to its first vertex, then IGNORE up to ``steps``."""
    hull = convex_hull(points)
    seq = hull + [hull[0]]
    return seq + [IGNORE] * (steps - len(seq))


@register_task
class ConvexHull(PointerTask):
    name = "convex-hull"
    # The sort recipe; the reference (references/convex-hull.pcfg, the sort
    # encoder) under it is not measured yet.
    recipe = Recipe(optimizer="adamw", lr=1e-3, batch_size=32, budget="1000steps")
    refs = ("S03",)
    metric_name = "sequence_accuracy"
    description = "planar convex hull of N points; pointer decoder; whole-sequence accuracy"

    @property
    def steps(self) -> int:
        return self.length + 1  # a hull of all N points, then the closing pointer

    def draw(self, n: int, rng: torch.Generator, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.rand(n, self.length, 2, generator=rng, dtype=torch.float64)
        y = torch.tensor([hull_target([tuple(p) for p in pts.tolist()], self.steps) for pts in x])
        return x.float(), y

    def body_input_shape(self, batch_size: int) -> Shape:
        return (batch_size, self.length, 2)

    def loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(pred.flatten(0, 1), y.flatten(), ignore_index=IGNORE)

    def metric(self, pred: torch.Tensor, y: torch.Tensor) -> float:
        keep = y != IGNORE
        right = (pred.argmax(-1) == y) | ~keep
        return float(right.all(dim=1).float().mean())
