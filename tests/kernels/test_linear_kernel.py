"""Chunked linear-attention kernel (Lightning Attention-2 tiling, S04/S48) and
its recurrent step against the naive O(N^2) float64 formula. Without a GPU the
kernels run under TRITON_INTERPRET=1 on tiny shapes; with one, for real, plus
larger CUDA-only shapes."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernel modules are imported

from archgram.kernels.linear import dispatch  # noqa: E402
from archgram.kernels.linear import reference as ref  # noqa: E402
from archgram.kernels.linear.chunk import chunk_forward, linear_attention  # noqa: E402
from archgram.kernels.linear.recurrent import recurrent_step  # noqa: E402

pytestmark = pytest.mark.catalog("S04", "S48")
CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
TOL = {torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2}
DECAYS = ["none", "decay", "gate", "both"]


def _inputs(b, h, n, dk, dv, mode="none", dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(b, h, n, dk, generator=g) / dk ** 0.25 for _ in range(2))
    v = torch.randn(b, h, n, dv, generator=g)
    log_decay = torch.log(torch.linspace(0.8, 0.99, h)) if mode in ("decay", "both") else None
    gate = -0.3 * torch.rand(b, h, n, generator=g) if mode in ("gate", "both") else None
    q, k, v = (t.to(DEVICE, dtype) for t in (q, k, v))
    def move(t):
        return None if t is None else t.to(DEVICE)
    return q, k, v, move(log_decay), move(gate)


def _rel(out, want):
    assert torch.isfinite(out).all(), "non-finite output"
    return ((out.double() - want.double()).norm() / want.double().norm()).item()


PATHS = ["fused", "split"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mode", DECAYS)
@pytest.mark.parametrize("n,dk,dv", [(37, 32, 24), (16, 16, 40)])
def test_chunked_linear_attention_matches_naive_masked_formula(mode, n, dk, dv, path):
    q, k, v, lam, gate = _inputs(2, 2, n, dk, dv, mode, seed=n)
    out, state, _ = chunk_forward(q, k, v, log_decay=lam, gate=gate, scale=0.7, return_state=True, path=path)
    assert out.shape == v.shape and out.dtype == q.dtype
    assert _rel(out, ref.attention(q, k, v, log_decay=lam, gate=gate, scale=0.7)) < TOL[torch.float32]
    assert _rel(state, ref.final_state(k, v, log_decay=lam, gate=gate)) < TOL[torch.float32]


@pytest.mark.parametrize("path", PATHS)
def test_reverse_pass_is_the_anti_causal_sum(path):
    """REVERSE: out_j = sum_{i >= j} exp(sum_{t=j+1..i} a_t) (q_j . k_i) v_i."""
    q, k, v, lam, gate = _inputs(1, 2, 21, 16, 16, "both", seed=3)
    out, _, _ = chunk_forward(q, k, v, log_decay=lam, gate=gate, reverse=True, path=path)
    a = ref.log_decays(21, 2, 1, lam, gate, device=q.device)
    c = a.cumsum(-1)
    w = torch.where(torch.ones(21, 21, dtype=torch.bool, device=q.device).triu(),
                    (c[..., None, :] - c[..., :, None]), torch.tensor(float("-inf"), device=q.device, dtype=c.dtype)).exp()
    want = ((q.double() @ k.double().transpose(-1, -2)) * w) @ v.double()
    assert _rel(out, want) < 1e-5


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mode", DECAYS)
def test_linear_attention_backward_matches_float64_autograd(mode, path):
    q, k, v, lam, gate = _inputs(1, 2, 29, 16, 24, mode, seed=5)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    extra = {"log_decay": None if lam is None else lam.clone().requires_grad_(),
             "gate": None if gate is None else gate.clone().requires_grad_()}
    out = linear_attention(*leaves, scale=0.5, path=path, **extra)
    do = torch.randn_like(out)
    wrt = leaves + [t for t in extra.values() if t is not None]
    got = torch.autograd.grad(out, wrt, do)
    leaves64 = [t.detach().double().requires_grad_() for t in wrt]
    kw = dict(zip([n for n, t in extra.items() if t is not None], leaves64[3:]))
    want = torch.autograd.grad(ref.attention(*leaves64[:3], scale=0.5, **kw), leaves64, do.double())
    for name, a, b in zip(["dq", "dk", "dv", *kw], got, want):
        assert a.shape == b.shape, name
        assert _rel(a, b) < 1e-5, name


def test_gate_gradient_is_not_trivially_zero():
    """The decay gradient of token 0 is exactly zero (nothing is older), the rest is not."""
    q, k, v, _, gate = _inputs(1, 1, 20, 16, 16, "gate", seed=7)
    gate.requires_grad_()
    (g,) = torch.autograd.grad(linear_attention(q, k, v, gate=gate).square().sum(), gate)
    assert g[..., 0].abs().max() < 1e-4 * g.abs().max()
    assert (g[..., 1:].abs() > 0).float().mean() > 0.9


@pytest.mark.parametrize("mode", DECAYS)
def test_recurrent_step_equals_chunked_form_token_by_token(mode):
    q, k, v, lam, gate = _inputs(2, 2, 11, 16, 20, mode, seed=9)
    state, outs, state64 = None, [], None
    for t in range(11):
        g_t = None if gate is None else gate[..., t]
        out, state = recurrent_step(state, q[..., t, :], k[..., t, :], v[..., t, :], log_decay=lam, gate_t=g_t, scale=0.5)
        want, state64 = ref.step(state64, q[..., t, :], k[..., t, :], v[..., t, :], log_decay=lam, gate_t=g_t, scale=0.5)
        assert _rel(out, want) < 1e-5
        outs.append(out)
    assert _rel(state, state64) < 1e-5
    chunked, final, _ = chunk_forward(q, k, v, log_decay=lam, gate=gate, scale=0.5, return_state=True)
    assert _rel(torch.stack(outs, -2), chunked) < 1e-5
    assert _rel(state, final) < 1e-5


def test_split_and_fused_paths_agree_over_many_chunks():
    """The chunk-parallel scan carries the state across 8 chunks exactly as the
    fused walk does (both ways, with decay and gate), final state included."""
    q, k, v, lam, gate = _inputs(1, 1, 16 * 8 - 3, 16, 16, "both", seed=11)
    for reverse in (False, True):
        fused, s1, _ = chunk_forward(q, k, v, log_decay=lam, gate=gate, reverse=reverse, return_state=True, path="fused")
        split, s2, _ = chunk_forward(q, k, v, log_decay=lam, gate=gate, reverse=reverse, return_state=True, path="split")
        assert _rel(split, fused) < 1e-6 and _rel(s2, s1) < 1e-6
    with pytest.raises(ValueError, match="path"):
        chunk_forward(q, k, v, path="parallel")


@pytest.mark.parametrize("path", PATHS)
def test_row_dot_is_the_rowsum_of_x_times_the_output(path):
    """The decay gradient's per-token q . dq, summed in the kernel across value
    blocks (dv 40 spans several), equals the sum over the written output."""
    q, k, v, lam, gate = _inputs(2, 2, 16 * 5 - 1, 16, 40, "both", seed=13)
    x = torch.randn_like(v)
    out, _, dot = chunk_forward(q, k, v, log_decay=lam, gate=gate, row_dot=x, path=path)
    assert dot.shape == q.shape[:3] and dot.dtype == torch.float32
    assert _rel(dot, (x.double() * out.double()).sum(-1)) < 1e-5
    assert chunk_forward(q, k, v, path=path)[2] is None
    with pytest.raises(ValueError, match="row_dot"):
        chunk_forward(q, k, v, row_dot=x[..., :8])


def test_segments_only_when_programs_are_few_and_chunks_many():
    from archgram.kernels.linear.chunk import segments
    cpu = torch.device("cpu")  # counts as 4 SMs: two waves = 8 programs
    assert segments(1, 1, 4096, 64, 64, 64, cpu) == 8  # 64 chunks, one program: 8 segments of 8 chunks
    assert segments(1, 2, 4096, 64, 64, 64, cpu) == 4
    assert segments(1, 3, 4096, 64, 64, 64, cpu) == 1  # 3 of 4 SMs busy: the walk beats two passes
    assert segments(8, 16, 4096, 64, 64, 64, cpu) == 1  # 128 programs fill it
    assert segments(1, 1, 448, 64, 64, 64, cpu) == 1  # 7 chunks: segments would be under 4 chunks
    assert segments(1, 1, 448, 64, 64, 64, cpu, path="split") == 7
    assert segments(1, 1, 64, 64, 64, 64, cpu, path="split") == 1  # one chunk: nothing to cut
    assert segments(1, 1, 4096, 64, 64, 64, cpu, path="fused") == 1


def test_reference_agrees_with_the_ops_parallel_and_chunked_forms():
    """Two independently written oracles (this package's and the op's) agree."""
    from archgram.ops.attention.linear_forms import chunked_causal, kernel_attention_parallel

    q, k, v, lam, _ = _inputs(1, 2, 19, 8, 8, "decay", seed=2)
    q, k, v, lam = q.double(), k.double(), v.double(), lam.double()
    want = ref.attention(q, k, v, log_decay=lam)
    assert _rel(kernel_attention_parallel(q, k, v, causal=True, decay=lam.exp()), want) < 1e-10
    assert _rel(chunked_causal(q, k, v, 5, decay=lam.exp()), want) < 1e-10


def test_bad_inputs_name_the_problem():
    q, k, v, _, _ = _inputs(1, 2, 8, 16, 16)
    with pytest.raises(ValueError, match="gate must be"):
        chunk_forward(q, k, v, gate=torch.zeros(1, 2, 7, device=DEVICE))
    with pytest.raises(ValueError, match="log_decay"):
        chunk_forward(q, k, v, log_decay=torch.zeros(3, device=DEVICE))
    with pytest.raises(ValueError, match="dtypes"):
        chunk_forward(q, k.double(), v)
    with pytest.raises(ValueError, match="state must be"):
        recurrent_step(torch.zeros(1, 2, 3, 3, device=DEVICE), q[..., 0, :], k[..., 0, :], v[..., 0, :])


def test_dispatch_falls_back_off_cuda_or_when_disabled(monkeypatch):
    q, k, v, _, _ = _inputs(1, 2, 8, 16, 16)
    if not CUDA:
        assert dispatch.causal(q, k, v) is None
        assert dispatch.step(None, q[..., 0, :], k[..., 0, :], v[..., 0, :]) is None
    monkeypatch.setattr(dispatch, "on_device", lambda *t: True)
    monkeypatch.setenv("ARCHGRAM_KERNELS", "off")
    assert dispatch.causal(q, k, v) is None
    monkeypatch.delenv("ARCHGRAM_KERNELS")
    assert dispatch.causal(q.double(), k.double(), v.double()) is None


@pytest.mark.parametrize("score,causal", [({"name": "linear"}, True), ({"name": "lightning", "decay": 0.9}, True),
                                          ({"name": "lightning"}, False)])
def test_attention_op_kernel_path_matches_pytorch_path_with_gradients(monkeypatch, kernel_calls, score, causal):
    from archgram.ops.attention.op import Attention

    calls = kernel_calls(dispatch, "causal")
    torch.manual_seed(0)
    n = 40 if CUDA else 13
    op = Attention((2, n, 64), heads=2, score=score, causal=causal).to(DEVICE)
    x = torch.randn(2, n, 64, device=DEVICE, requires_grad=True)
    fast = op(x)
    (gx_fast,) = torch.autograd.grad(fast.square().sum(), x)
    assert calls and all(calls), "the op did not use the kernel"
    monkeypatch.setenv("ARCHGRAM_KERNELS", "off")
    slow = op(x)
    (gx_slow,) = torch.autograd.grad(slow.square().sum(), x)
    assert _rel(fast, slow) < 1e-4
    assert _rel(gx_fast, gx_slow) < 1e-4


def test_op_decoding_uses_the_recurrent_kernel(monkeypatch, kernel_calls):
    from archgram.ops.attention.decode import decode
    from archgram.ops.attention.op import Attention

    calls = kernel_calls(dispatch, "step")
    torch.manual_seed(0)
    op = Attention((1, 6, 32), heads=2, score={"name": "lightning", "decay": 0.8}, causal=True).to(DEVICE)
    x = torch.randn(1, 6, 32, device=DEVICE)
    with torch.no_grad():
        fast = decode(op, x)
        monkeypatch.setenv("ARCHGRAM_KERNELS", "off")
        slow = op(x)
    assert len(calls) == 6
    assert _rel(fast, slow) < 1e-4


@needs_cuda
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mode,dtype,dk,dv", [(m, torch.bfloat16, 128, 128) for m in DECAYS]
                         + [("both", torch.float16, 64, 64), ("gate", torch.float32, 64, 96)])
def test_linear_large_shapes_on_gpu(mode, dtype, dk, dv, path):
    q, k, v, lam, gate = _inputs(2, 4, 1000, dk, dv, mode, dtype=dtype, seed=dk)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out = linear_attention(*leaves, log_decay=lam, gate=gate, path=path)
    assert _rel(out, ref.attention(q, k, v, log_decay=lam, gate=gate)) < TOL[dtype]
    do = torch.randn_like(out)
    got = torch.autograd.grad(out, leaves, do)
    l64 = [t.detach().double().requires_grad_() for t in (q, k, v)]
    want = torch.autograd.grad(ref.attention(*l64, log_decay=lam, gate=gate), l64, do.double())
    for a, b in zip(got, want):
        assert _rel(a, b) < 2 * TOL[dtype]
