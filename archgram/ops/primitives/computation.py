"""Computation ops: the leaves that carry weights or nonlinearity (einspace's C)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.registry import Arg, Op, check_rank, register_op
from archgram.shapes import IMAGE_RANK, Shape, channels, conv_length, with_channels

EINSPACE = ("S57",)


class _ShapePreserving(Op):
    """Ops that return their input shape (activations, norms, ...)."""

    @classmethod
    def count_params(cls, shape: Shape, /, **args) -> int | None:
        return 0

    @classmethod
    def output_shape(cls, shape: Shape, **args) -> Shape:
        check_rank(cls.spec.name, shape, 3, 4)
        return shape


@register_op("identity", family="primitives", refs=EINSPACE)
class Identity(_ShapePreserving):
    """Returns its input unchanged."""

    def __init__(self, shape: Shape):
        super().__init__()

    def forward(self, x):
        return x

    @classmethod
    def output_shape(cls, shape: Shape, **args) -> Shape:
        return shape

    @classmethod
    def flops(cls, shape, out, params, /, **args) -> int:
        return 0


class _ChannelMap(Op):
    """Base of ops that act on the channel axis (C of an image, D of a sequence)."""

    @staticmethod
    def to_last(x: torch.Tensor) -> torch.Tensor:
        return x.movedim(1, -1) if x.dim() == IMAGE_RANK else x

    @staticmethod
    def from_last(x: torch.Tensor) -> torch.Tensor:
        return x.movedim(-1, 1) if x.dim() == IMAGE_RANK else x


@register_op(
    "linear",
    family="primitives",
    refs=EINSPACE,
    args={"out": Arg(int, low=1, doc="output channels"), "bias": Arg(bool, True)},
)
class Linear(_ChannelMap):
    """Dense map of the channel axis (a 1x1 convolution on images)."""

    def __init__(self, shape: Shape, out: int, bias: bool = True):
        super().__init__()
        self.proj = nn.Linear(channels(shape), out, bias=bias)

    @classmethod
    def count_params(cls, shape, /, out, bias=True):
        return channels(shape) * out + (out if bias else 0)

    @classmethod
    def output_shape(cls, shape: Shape, out: int, bias: bool = True) -> Shape:
        check_rank("linear", shape, 3, 4)
        return with_channels(shape, out)

    def forward(self, x):
        return self.from_last(self.proj(self.to_last(x)))


@register_op("norm", family="primitives", refs=EINSPACE)
class Norm(_ShapePreserving):
    """einspace's norm: BatchNorm2d on images, LayerNorm on sequences."""

    @classmethod
    def count_params(cls, shape, /):
        return 2 * channels(shape)

    def __init__(self, shape: Shape):
        super().__init__()
        c = channels(shape)
        self.norm = nn.BatchNorm2d(c) if len(shape) == IMAGE_RANK else nn.LayerNorm(c)

    def forward(self, x):
        return self.norm(x)


@register_op("layernorm", family="primitives", refs=EINSPACE)
class LayerNorm(_ShapePreserving, _ChannelMap):
    """LayerNorm over the channel axis, in either layout."""

    @classmethod
    def count_params(cls, shape, /):
        return 2 * channels(shape)

    def __init__(self, shape: Shape):
        super().__init__()
        self.norm = nn.LayerNorm(channels(shape))

    def forward(self, x):
        return self.from_last(self.norm(self.to_last(x)))


@register_op("batchnorm", family="primitives", refs=EINSPACE)
class BatchNorm(_ShapePreserving):
    """BatchNorm over the channel axis, in either layout."""

    @classmethod
    def count_params(cls, shape, /):
        return 2 * channels(shape)

    def __init__(self, shape: Shape):
        super().__init__()
        self.norm = nn.BatchNorm1d(channels(shape)) if len(shape) == 3 else nn.BatchNorm2d(shape[1])

    def forward(self, x):
        if x.dim() == 3:
            return self.norm(x.transpose(1, 2)).transpose(1, 2)
        return self.norm(x)


def _activation(name: str, fn, doc: str):
    """Register a parameter-free elementwise activation as its own op class."""

    def forward(self, x):
        return fn(x)

    def init(self, shape: Shape):
        nn.Module.__init__(self)

    cls = type(name.capitalize(), (_ShapePreserving,), {"__init__": init, "forward": forward, "__doc__": doc})
    return register_op(name, family="primitives", refs=EINSPACE)(cls)


_activation("relu", F.relu, "Rectified linear unit.")
_activation("leakyrelu", F.leaky_relu, "Leaky ReLU (slope 0.01), einspace's activation.")
_activation("gelu", F.gelu, "Gaussian error linear unit.")
_activation("silu", F.silu, "Sigmoid linear unit (swish).")
_activation("sigmoid", torch.sigmoid, "Logistic sigmoid.")
_activation("tanh", torch.tanh, "Hyperbolic tangent.")


@register_op("softmax", family="primitives", refs=EINSPACE)
class Softmax(_ShapePreserving):
    """Softmax over the last axis (as einspace), the normaliser of dot-product attention."""

    def __init__(self, shape: Shape):
        super().__init__()

    def forward(self, x):
        return torch.softmax(x, dim=-1)


@register_op("posenc", family="primitives", refs=EINSPACE)
class LearnedPositionalEncoding(_ShapePreserving):
    """Learnable additive positional encoding of the whole per-example shape."""

    @classmethod
    def count_params(cls, shape, /):
        return math.prod(shape[1:])

    def __init__(self, shape: Shape):
        super().__init__()
        self.pos = nn.Parameter(torch.randn(1, *shape[1:]) * 0.02)

    def forward(self, x):
        return x + self.pos


def _pool_output(name: str, shape: Shape, k: int, s: int, p: int) -> Shape:
    check_rank(name, shape, 4)
    b, c, h, w = shape
    if 2 * p > k:
        raise ShapeError(f"{name}: padding {p} exceeds half the kernel {k}")
    ho, wo = conv_length(h, k, s, pad=2 * p), conv_length(w, k, s, pad=2 * p)
    if ho < 1 or wo < 1:
        raise ShapeError(f"{name}(k={k}, s={s}, p={p}) does not fit a {h}x{w} input")
    return (b, c, ho, wo)


_POOL_ARGS = {"k": Arg(int, 3, low=1), "s": Arg(int, 2, low=1), "p": Arg(int, 1, low=0)}


@register_op("maxpool", family="primitives", refs=EINSPACE, args=_POOL_ARGS)
class MaxPool(_ShapePreserving):
    """2D max pooling (image mode)."""

    def __init__(self, shape: Shape, k: int = 3, s: int = 2, p: int = 1):
        super().__init__()
        self.pool = nn.MaxPool2d(k, s, p)

    @classmethod
    def output_shape(cls, shape, k=3, s=2, p=1):
        return _pool_output("maxpool", shape, k, s, p)

    def forward(self, x):
        return self.pool(x)


@register_op("avgpool", family="primitives", refs=EINSPACE, args=_POOL_ARGS)
class AvgPool(_ShapePreserving):
    """2D average pooling (image mode)."""

    def __init__(self, shape: Shape, k: int = 3, s: int = 2, p: int = 1):
        super().__init__()
        self.pool = nn.AvgPool2d(k, s, p, count_include_pad=False)

    @classmethod
    def output_shape(cls, shape, k=3, s=2, p=1):
        return _pool_output("avgpool", shape, k, s, p)

    def forward(self, x):
        return self.pool(x)


@register_op(
    "conv2d",
    family="primitives",
    refs=EINSPACE,
    args={
        "out": Arg(int, low=1),
        "k": Arg(int, 3, low=1),
        "s": Arg(int, 1, low=1),
        "p": Arg(int, -1, low=-1, doc="-1 means 'same' padding (k // 2 * dilation)"),
        "d": Arg(int, 1, low=1),
        "groups": Arg(int, 1, low=1),
    },
)
class Conv2d(Op):
    """2D convolution (image mode); einspace reaches it as im2col -> linear -> col2im."""

    def __init__(self, shape: Shape, out: int, k=3, s=1, p=-1, d=1, groups=1):
        super().__init__()
        pad = k // 2 * d if p < 0 else p
        self.conv = nn.Conv2d(shape[1], out, k, s, pad, d, groups)

    @classmethod
    def count_params(cls, shape, /, out, k=3, s=1, p=-1, d=1, groups=1):
        return shape[1] // groups * out * k * k + out

    @classmethod
    def output_shape(cls, shape, out, k=3, s=1, p=-1, d=1, groups=1):
        check_rank("conv2d", shape, 4)
        b, c, h, w = shape
        if c % groups or out % groups:
            raise ShapeError(f"conv2d: groups={groups} must divide in ({c}) and out ({out}) channels")
        pad = k // 2 * d if p < 0 else p
        ho, wo = conv_length(h, k, s, d, 2 * pad), conv_length(w, k, s, d, 2 * pad)
        if ho < 1 or wo < 1:
            raise ShapeError(f"conv2d(k={k}, s={s}, d={d}) does not fit a {h}x{w} input")
        return (b, out, ho, wo)

    def forward(self, x):
        return self.conv(x)


@register_op(
    "scale",
    family="primitives",
    refs=EINSPACE,
    args={"value": Arg(float, 1.0)},
)
class Scale(_ShapePreserving):
    """Multiply by a constant (e.g. 1/sqrt(d) before a softmax)."""

    def __init__(self, shape: Shape, value: float = 1.0):
        super().__init__()
        self.value = value

    def forward(self, x):
        return x * self.value

    def extra_repr(self) -> str:
        return f"value={self.value:g}"


__all__ = ["Identity", "Linear", "Norm"]
