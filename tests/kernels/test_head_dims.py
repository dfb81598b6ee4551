"""Every head dim from 16 to 256, powers of two or not, through the flash
forward and backward, the linear chunk kernel and both decode kernels
(split-KV, Lean Attention), against the float64 references and their autograd
gradients.

The cross product (head dim x score x mask x GQA x position x dtype x lengths)
is large; the default (CPU interpreter) run samples it with fixed seeds, a
few cases per head dim (``test_default_sample_covers_every_axis`` keeps that
sample honest), on odd lengths. With a GPU, ``gpu`` runs every score and every
mask at each head dim (the other axes drawn per case), and ``slow`` the full
grid head dim x score x mask x GQA x dtype (3150 cases; positions and lengths
drawn).
"""
import itertools
import os
import random

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernel modules are imported

from archgram.kernels import fallbacks  # noqa: E402
from archgram.kernels.decode import reference as decode_ref  # noqa: E402
from archgram.kernels.decode.lean import lean_attention  # noqa: E402
from archgram.kernels.decode.split import decode_attention  # noqa: E402
from archgram.kernels.flash import dispatch, flash_attention  # noqa: E402
from archgram.kernels.flash.reference import attention as reference  # noqa: E402
from archgram.kernels.flash.spec import KERNEL_SCORES  # noqa: E402
from archgram.kernels.linear import reference as linear_ref  # noqa: E402
from archgram.kernels.linear.chunk import linear_attention  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")

HEAD_DIMS = (16, 32, 48, 64, 80, 96, 128, 160, 192, 256)
SCORES = KERNEL_SCORES  # every score the flash kernels serve
BLOCKS = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 1]], dtype=torch.bool)
# name -> (mask keywords for n tokens, whether it needs Nq == Nk)
MASKS = {
    "full": (lambda n: {}, False),
    "causal": (lambda n: {"causal": True}, False),
    "window": (lambda n: {"window": 5, "dilation": 2}, False),
    "causal-window": (lambda n: {"causal": True, "window": 6}, False),
    "neighborhood": (lambda n: {"neighborhood": 5, "dilation": 2}, True),
    "block-sparse": (lambda n: {"block_mask": BLOCKS, "block": (-(-n // 3), -(-n // 3))}, True),
    "neighborhood2d": (lambda n: {"neighborhood": 3, "grid": (3, n // 3)}, True),
}
GROUPS = ((2, 2), (4, 2), (4, 1))  # (heads, kv heads): MHA, GQA, MQA
POSITIONS = ("none", "alibi", "rel_bias")
CPU_DTYPES = (torch.float32, torch.float16)  # the interpreter's bf16 tl.dot is wrong (test_flash.py)
GPU_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
TOL = {torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2}
GRAD_TOL = {torch.float32: 2e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}
PER_DIM = 3  # sampled cases per head dim in the default run


def grid(dtypes, lengths):
    """The whole cross product: (d, score, mask, (h, hkv), position, dtype, (nq, nk))."""
    return list(itertools.product(HEAD_DIMS, SCORES, MASKS, GROUPS, POSITIONS, dtypes, lengths))


def _drop_unequal(cases):
    return [c for c in cases if not (MASKS[c[2]][1] and c[6][0] != c[6][1])]


CPU_LENGTHS = ((17, 17), (33, 33), (9, 21))
GPU_LENGTHS = ((255, 255), (129, 383))


def default_sample():
    """PER_DIM cases per head dim, fixed seeds, from the CPU product."""
    cases = _drop_unequal(grid(CPU_DTYPES, CPU_LENGTHS))
    out = []
    for d in HEAD_DIMS:
        out += random.Random(d).sample([c for c in cases if c[0] == d], PER_DIM)
    return out


def gpu_grid():
    """Per head dim, every score and every mask at least once (score i with mask
    i, wrapping); GQA, position, dtype and lengths drawn per case."""
    rng = random.Random(0)
    out = []
    for d in HEAD_DIMS:
        for i in range(max(len(SCORES), len(MASKS))):
            score, mask = SCORES[(i + d) % len(SCORES)], list(MASKS)[i % len(MASKS)]
            out.append(_drawn(rng, d, score, mask, rng.choice(GROUPS), rng.choice(GPU_DTYPES)))
    return out


def full_gpu_grid():
    """Head dim x score x mask x GQA x dtype, position and lengths drawn per case."""
    rng = random.Random(1)
    return [_drawn(rng, d, score, mask, groups, dtype)
            for d, score, mask, groups, dtype in itertools.product(HEAD_DIMS, SCORES, MASKS, GROUPS, GPU_DTYPES)]


def _drawn(rng, d, score, mask, groups, dtype):
    lengths = GPU_LENGTHS[0] if MASKS[mask][1] else rng.choice(GPU_LENGTHS)
    return d, score, mask, groups, rng.choice(POSITIONS), dtype, lengths


def _id(case):
    d, score, mask, (h, hkv), pos, dtype, (nq, nk) = case
    return f"d{d}-{score}-{mask}-g{h // hkv}-{pos}-{str(dtype)[6:]}-{nq}x{nk}"


def check(case, batch=1, seed=0):
    """Forward and q, k, v (and relative-bias table) gradients vs float64 autograd."""
    d, score, mask, (h, hkv), pos, dtype, (nq, nk) = case
    if nq == nk and mask == "neighborhood2d":
        nq = nk = 3 * (nq // 3)
    g = torch.Generator().manual_seed(seed + d)
    q = torch.randn(batch, h, nq, d, generator=g)
    k, v = (torch.randn(batch, hkv, nk, d, generator=g) for _ in range(2))
    ins = [t.to(DEVICE, dtype).requires_grad_() for t in (q, k, v)]
    kw = dict(score=score, cap=3.0, gamma=-0.1, zeta=1.1, **MASKS[mask][0](nk))
    if pos == "alibi":
        kw["alibi_slopes"] = torch.tensor([0.5 ** (i + 1) for i in range(h)], device=DEVICE)
    if pos == "rel_bias":
        ins.append(torch.randn(h, 7, generator=g).to(DEVICE).requires_grad_())
    do = torch.randn(batch, h, nq, d, generator=g).to(DEVICE, dtype)
    table = ins[3] if pos == "rel_bias" else None
    out = flash_attention(*ins[:3], rel_bias=table, **kw)
    grads = torch.autograd.grad(out, ins, do)
    ref_ins = [t.detach().double().requires_grad_() for t in ins]
    ref, _ = reference(*ref_ins[:3], rel_bias=ref_ins[3] if table is not None else None, **kw)
    want = torch.autograd.grad(ref, ref_ins, do.double())
    assert out.shape == (batch, h, nq, d) and out.dtype == dtype
    assert _rel(out, ref) < TOL[dtype], "out"
    for name, got, ref_grad in zip(("q", "k", "v", "rel_bias"), grads, want):
        assert got.shape == ref_grad.shape
        assert _rel(got, ref_grad) < GRAD_TOL[dtype], f"d{name}"


def _rel(out, ref):
    assert torch.isfinite(out).all(), "non-finite output"
    if ref.norm() == 0:
        return out.double().norm().item()
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


@pytest.mark.parametrize("case", default_sample(), ids=_id)
def test_every_head_dim_forward_and_gradients_match_float64(case):
    check(case)


def test_default_sample_covers_every_axis():
    """The fixed-seed sample still reaches every score, mask, head layout,
    position, CPU dtype and length pair (reseed it if a change breaks this)."""
    sample = default_sample()
    for axis, values in enumerate((HEAD_DIMS, SCORES, MASKS, GROUPS, POSITIONS, CPU_DTYPES, CPU_LENGTHS)):
        assert {c[axis] for c in sample} == set(values), f"axis {axis}"


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("case", gpu_grid(), ids=_id)
def test_every_head_dim_score_and_mask_on_gpu(case):
    check(case, batch=2)


@needs_cuda
@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("case", full_gpu_grid(), ids=_id)
def test_full_head_dim_grid_on_gpu(case):
    check(case, batch=2)


# ------------------------------------------------------------- linear and decode
@pytest.mark.parametrize("d", HEAD_DIMS)
def test_linear_chunk_kernel_serves_every_head_dim(d):
    """Causal decayed linear attention, Dk = Dv = d, forward and gradients."""
    rng = random.Random(d)
    mode = rng.choice(("none", "decay", "gate", "both"))
    g = torch.Generator().manual_seed(d)
    n = 21
    q, k = (torch.randn(1, 2, n, d, generator=g) / d ** 0.25 for _ in range(2))
    v = torch.randn(1, 2, n, d, generator=g)
    log_decay = torch.log(torch.tensor([0.8, 0.95])) if mode in ("decay", "both") else None
    gate = -0.3 * torch.rand(1, 2, n, generator=g) if mode in ("gate", "both") else None
    ins = [t.to(DEVICE).requires_grad_() for t in (q, k, v)]
    extra = dict(log_decay=None if log_decay is None else log_decay.to(DEVICE),
                 gate=None if gate is None else gate.to(DEVICE))
    out = linear_attention(*ins, **extra)
    do = torch.randn(out.shape, generator=g).to(DEVICE)
    grads = torch.autograd.grad(out, ins, do)
    ref_ins = [t.detach().double().requires_grad_() for t in ins]
    ref_extra = {key: None if t is None else t.double() for key, t in extra.items()}
    want = linear_ref.attention(*ref_ins, **ref_extra)
    assert _rel(out, want) < 1e-5
    for name, got, ref_grad in zip("qkv", grads, torch.autograd.grad(want, ref_ins, do.double())):
        assert _rel(got, ref_grad) < 2e-5, f"d{name}"


@pytest.mark.parametrize("kernel", ["split", "lean"])
@pytest.mark.parametrize("d", HEAD_DIMS)
def test_decode_kernels_serve_every_head_dim(d, kernel):
    """Split-KV and Lean Attention decode, GQA 2, ragged cache lengths."""
    g = torch.Generator().manual_seed(d)
    q = torch.randn(2, 4, 1, d, generator=g).to(DEVICE)
    k, v = (torch.randn(2, 2, 37, d, generator=g).to(DEVICE) for _ in range(2))
    lengths = torch.tensor([37, 11], device=DEVICE)
    if kernel == "split":
        out = decode_attention(q, k, v, lengths, splits=3)
    else:
        out = lean_attention(q, k, v, lengths, programs=3)
    want, _ = decode_ref.attention(q, k, v, lengths)
    assert _rel(out, want) < 1e-5


# ------------------------------------------------------------- no fallback, and why
def test_no_head_dim_from_16_to_256_falls_back(monkeypatch, caplog):
    """ARCHGRAM_KERNELS=explain logs nothing and records nothing for any head
    dim 16..256 (every integer), and one reason, once, outside that range."""
    monkeypatch.setenv("ARCHGRAM_KERNELS", "explain")
    monkeypatch.setattr(dispatch, "on_device", lambda *t: True)
    fallbacks.reset()
    for d in range(16, 257):
        q = torch.empty(1, 2, 5, d, device=DEVICE)
        assert dispatch.why_not(q, q[:, :1], q[:, :1], causal=True) is None, d
    with caplog.at_level("WARNING", logger="archgram.kernels"):
        for d in (48, 256):
            q = torch.randn(1, 2, 5, d, device=DEVICE)
            assert dispatch.attention(q, q, q, causal=True) is not None
        assert fallbacks.counts() == [] and not caplog.records
        for _ in range(3):
            q = torch.randn(1, 2, 5, 264, device=DEVICE)
            assert dispatch.attention(q, q, q) is None
    assert fallbacks.counts() == [{"family": "flash", "reason": "head dim 264 outside 16-256", "calls": 3}]
    assert [r.getMessage() for r in caplog.records] == \
        ["archgram kernels: flash ran PyTorch instead: head dim 264 outside 16-256"]
    fallbacks.reset()


def test_a_config_too_large_for_the_gpu_steps_down_and_is_remembered():
    """launch_fitting: on Triton's OutOfResources the next smaller config runs
    (fewer stages, then halved tiles), and later calls start from it."""
    from triton.runtime.errors import OutOfResources

    from archgram.kernels.flash.common import smaller
    from archgram.kernels.launch import launch_fitting

    tried = []

    def run(cfg):
        tried.append(cfg)
        if cfg[0] * cfg[1] * cfg[3] > 64 * 32 * 2:
            raise OutOfResources(1, 0, "shared memory")
        return cfg

    key = ("test", 256, torch.float32)
    assert launch_fitting(key, (64, 32, 8, 3), smaller, run) == (64, 32, 8, 2)
    assert launch_fitting(key, (128, 64, 8, 2), smaller, run) == (32, 64, 8, 2)
    assert tried == [(64, 32, 8, 3), (64, 32, 8, 2), (128, 64, 8, 2), (64, 64, 8, 2), (32, 64, 8, 2)]
    tried.clear()
    assert launch_fitting(key, (64, 32, 8, 3), smaller, run) == (64, 32, 8, 2) and tried == [(64, 32, 8, 2)]
    assert smaller((16, 16, 1, 1)) is None


def test_linear_chunk_steps_down_its_tiles_when_shared_memory_runs_out(monkeypatch):
    """The linear chunk kernel's table fits 2-byte inputs; fp32 at key dims 129-256
    overflowed an H100's shared memory (295,168 > 232,448 bytes). chunk_forward now
    runs through launch_fitting with the linear ``smaller`` (stages, then value
    block, then chunk), so the first tile that compiles runs and gives the
    same result as the float64 reference."""
    from triton.runtime.errors import OutOfResources

    from archgram.kernels.linear import chunk

    assert chunk.smaller((64, 64, 8, 2)) == (64, 64, 8, 1)
    assert chunk.smaller((64, 64, 8, 1)) == (64, 32, 8, 1)
    assert chunk.smaller((64, 16, 8, 1)) == (32, 16, 8, 1) and chunk.smaller((16, 16, 8, 1)) is None
    monkeypatch.setattr(chunk, "config", lambda dk, dv: (16, 32, 1, 2))  # larger than "fits" below
    real = chunk._chunk_fwd
    seen = []

    class Refusing:
        def __getitem__(self, grid):
            def launch(*args, **kw):
                seen.append((kw["BT"], kw["BV"], kw["num_stages"]))
                if kw["BV"] * kw["num_stages"] > 16:
                    raise OutOfResources(1, 0, "shared memory")
                return real[grid](*args, **kw)
            return launch

    monkeypatch.setattr(chunk, "_chunk_fwd", Refusing())
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, 19, 24, generator=g, dtype=torch.float32) for _ in range(3))
    out, _, _ = chunk.chunk_forward(q, k, v, scale=0.5, path="fused")
    want = linear_ref.attention(q.double(), k.double(), v.double(), scale=0.5)
    assert seen[:3] == [(16, 32, 2), (16, 32, 1), (16, 16, 1)]
    assert _rel(out, want) < 1e-5
