"""The convex-hull task of Pointer Networks (S03): targets checked on hand-computed hulls."""
from __future__ import annotations

import pytest
import torch

from archgram.tasks import get_task
from archgram.tasks.convex_hull import IGNORE, convex_hull, hull_target

pytestmark = pytest.mark.catalog("S03")


def test_convex_hull_on_hand_computed_cases():
    # unit square plus its centre: the centre is inside
    assert convex_hull([(0, 0), (1, 0), (0.5, 0.5), (1, 1), (0, 1)]) == [0, 1, 3, 4]
    # same points shuffled: counter-clockwise, starting at the lowest index (1 = (1, 1))
    assert convex_hull([(0.5, 0.5), (1, 1), (0, 0), (0, 1), (1, 0)]) == [1, 3, 2, 4]
    # a triangle with a point on an edge (not a vertex) and one inside
    assert convex_hull([(2, 0), (0, 0), (1, 0), (1, 2), (1, 0.5)]) == [0, 3, 1]
    # pentagon (0,0) (2,0) (3,2) (1,3) (-1,2) with two interior points, listed out of order
    pts = [(1, 1), (3, 2), (0, 0), (1, 3), (2, 1), (2, 0), (-1, 2)]
    assert convex_hull(pts) == [1, 3, 6, 2, 5]


def test_hull_target_closes_the_polygon_then_ignores():
    assert hull_target([(0, 0), (1, 0), (0.5, 0.5), (1, 1), (0, 1)], 6) == [0, 1, 3, 4, 0, IGNORE]


def test_convex_hull_task_data_and_sequence_accuracy():
    task = get_task("convex-hull", length=6, n_train=32, n_val=8)
    data = task.data(0)
    assert data.x_train.shape == (32, 6, 2) and data.y_train.shape == (32, 7)
    for pts, y in zip(data.x_train[:4], data.y_train[:4], strict=True):
        assert y.tolist() == hull_target([tuple(p) for p in pts.double().tolist()], 7)
    y = data.y_val
    perfect = torch.nn.functional.one_hot(y.clamp(min=0), 6).float()
    assert task.metric(perfect, y) == 1.0
    wrong_one = perfect.clone()
    wrong_one[0, 0] = perfect[0, 0].roll(1)  # the first example's first pointer is now wrong
    assert task.metric(wrong_one, y) == pytest.approx(7 / 8)
    assert task.loss(perfect * 20, y) < 1e-3  # IGNORE steps add nothing
    assert task.head((8, 6, 5))(torch.randn(8, 6, 5)).shape == (8, 7, 6)
