"""S02's integral and local kernels: each converges to one operator as the grid
is refined (discretisation convergence, Berner et al. 2025), and each equals its
defining formula (a quadrature of an integral, or a finite difference).

Grids are cell-centred on [0, 1)^d, so the points of a grid of n are points of
the grid of 3n (index 3i + 1): outputs are compared at the same physical points.
"""
from __future__ import annotations

import math

import pytest
import torch

from archgram.errors import ShapeError
from archgram.ops import get_op
from archgram.ops.operators.fields import cell_centres

pytestmark = pytest.mark.catalog("S02")


def build(name, shape, seed=0, **args):
    torch.manual_seed(seed)
    spec = get_op(name)
    return spec.build(shape, spec.bind(args)).double()


def field_1d(n: int) -> torch.Tensor:
    """Two smooth periodic channels sampled at the n cell centres: (1, n, 2)."""
    t = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return torch.stack([torch.sin(2 * math.pi * t), 0.5 + torch.cos(4 * math.pi * t + 1)], dim=-1)[None]


def field_2d(n: int) -> torch.Tensor:
    y, x = cell_centres((n, n), torch.float64, torch.device("cpu")).reshape(n, n, 2).unbind(-1)
    return torch.stack([torch.sin(2 * math.pi * x) * torch.cos(2 * math.pi * y), torch.cos(2 * math.pi * (x + y))])[None]


def on_coarse_points(fine: torch.Tensor, factor: int, image: bool) -> torch.Tensor:
    """Values of a fine-grid output at the points of a grid ``factor`` times coarser (factor odd)."""
    idx = slice(factor // 2, None, factor)
    return fine[..., idx, idx] if image else fine[:, idx]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def resolution_errors(m, field, sizes, image=False) -> list[float]:
    """Relative distance of the output at each size in ``sizes`` from the finest one, at shared points."""
    with torch.no_grad():
        finest = m(field(sizes[-1]))
        return [rel(m(field(n)), on_coarse_points(finest, sizes[-1] // n, image)) for n in sizes[:-1]]


@pytest.mark.parametrize("name,args", [
    ("integral_kernel", {"hidden": 8, "rank": 3}),
    ("differential_kernel", {"k": 3}),
    ("local_integral_kernel", {"radius": 0.125, "basis": 3}),
])
def test_operator_layer_converges_as_the_grid_is_refined_1d(name, args):
    """One set of weights, grids of 16, 48 and 144 points: the outputs approach the
    432-point output at the same points, and each refinement shrinks the gap."""
    m = build(name, (1, 16, 2), **args)
    errors = resolution_errors(m, field_1d, [16, 48, 144, 432])
    assert errors[-1] < 0.01, errors
    assert errors[0] > 2.5 * errors[1] > 2.5 ** 2 * errors[2], errors


@pytest.mark.parametrize("name,args,sizes,tol", [
    ("integral_kernel", {"hidden": 8, "rank": 4}, [4, 12, 36], 0.03),
    ("differential_kernel", {"k": 3}, [27, 81, 243], 0.1),  # first order: slower
    ("local_integral_kernel", {"radius": 0.2, "basis": 2}, [6, 18, 54], 0.02),
])
def test_operator_layer_converges_as_the_grid_is_refined_2d(name, args, sizes, tol):
    m = build(name, (1, 2, sizes[0], sizes[0]), **args)
    errors = resolution_errors(m, field_2d, sizes, image=True)
    assert errors[-1] < tol and all(a > 2.5 * b for a, b in zip(errors, errors[1:])), errors


def test_integral_kernel_is_the_midpoint_quadrature_of_its_integral():
    """Naive double loop: y(x_i) = sum_j sum_r a_r(x_i, y_j) M_r^T v(y_j) / N."""
    m = build("integral_kernel", (2, 5, 3), hidden=6, rank=2)
    v = torch.randn(2, 5, 3, dtype=torch.float64)
    pts = (torch.arange(5, dtype=torch.float64) + 0.5) / 5
    ref = torch.zeros(2, 5, 3, dtype=torch.float64)
    with torch.no_grad():
        for i in range(5):
            for j in range(5):
                a = m.kernel(torch.stack([pts[i], pts[j]]))
                kappa = sum(a[r] * m.mix[r] for r in range(2))  # (cin, cout)
                ref[:, i] += v[:, j] @ kappa / 5
        torch.testing.assert_close(m(v), ref)


def test_integral_kernel_output_at_a_point_depends_on_the_whole_domain():
    m = build("integral_kernel", (1, 12, 2), hidden=8, rank=2)
    v = field_1d(12).requires_grad_(True)
    m(v)[0, 0].sum().backward()
    assert (v.grad[0].abs().sum(-1) > 0).all()  # every input point reaches output point 0


def test_differential_kernel_with_a_central_stencil_is_the_derivative_at_second_order():
    """Stencil (-1/2, 0, 1/2) on channel 0 -> v' = 2 pi cos(2 pi x), error falling ~9x per 3x refinement."""
    m = build("differential_kernel", (1, 16, 2))
    with torch.no_grad():
        m.weight.zero_()
        m.weight[0, 0] = torch.tensor([-0.5, 0.0, 0.5], dtype=torch.float64)
    errors = []
    for n in (16, 48, 144):
        t = (torch.arange(n, dtype=torch.float64) + 0.5) / n
        with torch.no_grad():
            errors.append(rel(m(field_1d(n))[0, :, 0], 2 * math.pi * torch.cos(2 * math.pi * t)))
    assert errors[-1] < 1e-3 and errors[0] > 8 * errors[1] > 64 * errors[2], errors


def test_differential_kernel_ignores_constants():
    """A zero-sum stencil: a constant field has zero derivative at every resolution."""
    m = build("differential_kernel", (1, 2, 8, 8), k=5)
    for n in (8, 24):
        torch.testing.assert_close(m(torch.full((1, 2, n, n), 3.0, dtype=torch.float64)),
                                   torch.zeros(1, 2, n, n, dtype=torch.float64))


def test_local_integral_kernel_equals_its_integral_over_a_fixed_physical_support():
    """Reference: int_{-r}^{r} kappa(z) v(x + z) dz by a 4001-point trapezoid rule using
    the op's own kappa; the op's quadrature approaches it, and its taps grow with n."""
    r = 0.125
    m = build("local_integral_kernel", (1, 16, 2), radius=r, basis=3)
    z = torch.linspace(-r, r, 4001, dtype=torch.float64)
    with torch.no_grad():
        kappa = m.kappa([z])  # (cout, cin, len(z)), a conv weight
    errors = []
    for n in (16, 48, 144):
        x = (torch.arange(n, dtype=torch.float64) + 0.5) / n
        t = x[:, None] + z[None]
        v = torch.stack([torch.sin(2 * math.pi * t), 0.5 + torch.cos(4 * math.pi * t + 1)], dim=0)  # (cin, n, z)
        ref = torch.trapezoid(torch.einsum("inz,oiz->noz", v, kappa), z, dim=-1)[None]
        with torch.no_grad():
            errors.append(rel(m(field_1d(n)), ref))
    assert [2 * m.taps(n, r) + 1 for n in (16, 48, 144)] == [3, 11, 35]
    assert errors[-1] < 1e-3 and errors[0] > 4 * errors[1] > 16 * errors[2], errors


def test_local_integral_kernel_refuses_a_radius_below_one_grid_spacing():
    with pytest.raises(ShapeError, match="radius"):
        get_op("local_integral_kernel").cls.output_shape((1, 8, 2), radius=0.1)
