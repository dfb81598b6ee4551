"""Darcy flow task (S01/S02 benchmark): the finite-difference solver against a
manufactured solution, the data's shapes and determinism, and the relative-L2 metric."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from archgram.tasks import get_task
from archgram.tasks.darcy import darcy_matrix, random_coefficient, solve_darcy

pytestmark = pytest.mark.catalog("S01", "S02")


def manufactured_error(n: int) -> float:
    """Max error of the solver for u = sin(pi x) sin(pi y), a = 1 + x y, f = -div(a grad u)."""
    x = np.arange(1, n + 1) / (n + 1)
    X, Y = np.meshgrid(x, x, indexing="ij")
    a = 1 + X * Y
    u = np.sin(np.pi * X) * np.sin(np.pi * Y)
    ux = np.pi * np.cos(np.pi * X) * np.sin(np.pi * Y)
    uy = np.pi * np.sin(np.pi * X) * np.cos(np.pi * Y)
    f = -(Y * ux + X * uy - 2 * np.pi**2 * a * u)  # a_x = y, a_y = x, lap u = -2 pi^2 u
    return float(np.abs(solve_darcy(a, f) - u).max())


def test_solver_converges_to_a_manufactured_solution_at_second_order():
    errors = [manufactured_error(n) for n in (7, 15, 31)]  # h = 1/8, 1/16, 1/32
    assert errors[-1] < 2e-3
    for coarse, fine in zip(errors, errors[1:], strict=False):
        assert 3.0 < coarse / fine < 5.0  # O(h^2): halving h divides the error by ~4


def test_solver_with_constant_coefficient_is_the_5_point_laplacian():
    n = 5
    A = darcy_matrix(np.full((n, n), 2.0)).toarray()
    h2 = 1 / (n + 1) ** 2
    lap = np.diag(np.full(n, 2.0)) - np.diag(np.ones(n - 1), 1) - np.diag(np.ones(n - 1), -1)
    ref = 2.0 * (np.kron(lap, np.eye(n)) + np.kron(np.eye(n), lap)) / h2
    np.testing.assert_allclose(A, ref)
    np.testing.assert_allclose(A, A.T)  # symmetric (positive definite) for any a > 0
    A = darcy_matrix(random_coefficient(n, np.random.default_rng(0))).toarray()
    np.testing.assert_allclose(A, A.T)
    assert np.linalg.eigvalsh(A).min() > 0


def test_darcy_task_data_shapes_determinism_and_physics():
    task = get_task("darcy", resolution=8, n_train=12, n_val=4)
    d = task.data(0)
    assert d.x_train.shape == (12, 1, 8, 8) and d.y_train.shape == (12, 1, 8, 8) and d.n_val == 4
    assert set(d.x_train.unique().tolist()) <= {3.0, 12.0}
    assert (d.y_train > 0).all()  # f = 1 > 0 and u = 0 on the boundary: u > 0 inside (maximum principle)
    again = get_task("darcy", resolution=8, n_train=12, n_val=4).data(0)
    assert torch.equal(d.x_train, again.x_train) and torch.equal(d.y_val, again.y_val)
    assert not torch.equal(d.x_train, task.data(1).x_train)
    stem, head = task.stem(task.body_input_shape(4)), task.head((4, 6, 8, 8))
    assert stem(d.x_train[:4]).abs().max() == 1.0
    assert head(torch.randn(4, 6, 8, 8)).shape == (4, 1, 8, 8)
    task.check_body_output((4, 6, 8, 8))


def test_relative_l2_metric_is_negative_error_and_zero_prediction_scores_chance():
    task = get_task("darcy", resolution=8, n_train=4, n_val=4)
    y = task.data(0).y_val
    assert task.metric(y, y) == 0.0
    assert task.metric(torch.zeros_like(y), y) == pytest.approx(task.chance())
    assert task.metric(1.1 * y, y) == pytest.approx(-0.1, rel=1e-5)
    assert float(task.loss(1.1 * y, y)) == pytest.approx(0.1, rel=1e-5)
