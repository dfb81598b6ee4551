"""ContMix guided by a top-down context (OverLoCK, S50): queries from x, keys from
the overview context's region centres."""
from __future__ import annotations

import pytest
import torch

from archgram.errors import ShapeError
from archgram.ops import get_op

pytestmark = pytest.mark.catalog("S50")


def build(name, shape, **args):
    spec = get_op(name)
    return spec.build(shape, spec.bind(args)).eval()


def test_guided_contmix_with_x_as_its_own_context_equals_contmix():
    x = torch.randn(2, 4, 6, 6)
    plain = build("contmix", tuple(x.shape), k=3, regions=2, heads=2)
    guided = build("contmix_guided", [tuple(x.shape), tuple(x.shape)], k=3, regions=2, heads=2)
    guided.load_state_dict(plain.state_dict())
    torch.testing.assert_close(guided([x, x]), plain(x))


def test_top_down_context_steers_the_kernels_and_far_pixels_of_x_do_not():
    """The paper's split: a position's kernel depends on x only through its own
    query and otherwise on the overview context. Changing a far pixel of x leaves
    the kernel at (0, 0) unchanged; changing the (coarser, wider) context changes
    it. The unguided contmix, whose keys come from x, has no such separation."""
    ctx, x = torch.randn(1, 6, 3, 3), torch.randn(1, 4, 6, 6)
    m = build("contmix_guided", [tuple(ctx.shape), tuple(x.shape)], k=3, regions=2, heads=2)
    kern = m.kernels(ctx, x)
    assert kern.shape == (1, 2, 36, 9)
    torch.testing.assert_close(kern.sum(-1), torch.ones(1, 2, 36))
    x2 = x.clone()
    x2[..., 5, 5] += 3.0
    torch.testing.assert_close(m.kernels(ctx, x2)[:, :, 0], kern[:, :, 0])
    assert not torch.allclose(m.kernels(ctx + torch.randn_like(ctx), x)[:, :, 0], kern[:, :, 0])
    plain = build("contmix", tuple(x.shape), k=3, regions=2, heads=2)
    assert not torch.allclose(plain.kernels(x2)[:, :, 0], plain.kernels(x)[:, :, 0])


def test_guided_contmix_shape_rule():
    rule = get_op("contmix_guided").cls.output_shape
    assert rule([(2, 6, 3, 3), (2, 4, 6, 6)], k=3, regions=2) == (2, 4, 6, 6)
    for bad, args in (([(2, 4, 6, 6)], {}), ([(2, 6, 3, 3), (1, 4, 6, 6)], {"regions": 2}),
                      ([(2, 6, 3, 3), (2, 4, 6, 6)], {"k": 4, "regions": 2}), ([(2, 6, 3, 3), (2, 4, 6, 6)], {"regions": 4}),
                      ([(2, 6, 3, 3), (2, 5, 6, 6)], {"regions": 2})):
        with pytest.raises(ShapeError, match="contmix_guided"):
            rule(bad, **args)
