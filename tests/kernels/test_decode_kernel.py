"""Split-KV decode kernel (flash-decoding / Lean Attention, S25) against naive
softmax over each sequence's cache, and torch SDPA. Without a GPU it runs under
TRITON_INTERPRET=1 on tiny shapes; with one, for real, plus long caches."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernel modules are imported

import torch.nn.functional as F  # noqa: E402

from archgram.kernels.decode import dispatch  # noqa: E402
from archgram.kernels.decode import reference as ref  # noqa: E402
from archgram.kernels.decode.split import decode_attention, plan  # noqa: E402

pytestmark = pytest.mark.catalog("S25")
CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}


def _inputs(b, h, hkv, nq, nk, d, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, nq, d, generator=g)
    k = torch.randn(b, hkv, nk, d, generator=g)
    v = torch.randn(b, hkv, nk, d, generator=g)
    return [t.to(DEVICE, dtype) for t in (q, k, v)]


def _rel(out, want):
    assert torch.isfinite(out).all(), "non-finite output"
    return ((out.double() - want.double()).norm() / want.double().norm()).item()


@pytest.mark.parametrize("h,hkv,nq,d,splits", [
    (4, 2, 1, 32, None),   # GQA 2, one token, default split plan
    (4, 1, 3, 24, 5),      # MQA, three new tokens (causal among them), odd head dim
    (2, 2, 1, 64, 8),      # MHA, more splits than the short sequences fill
    (8, 2, 2, 16, 3),
])
def test_split_kv_decode_matches_naive_softmax_with_variable_lengths(h, hkv, nq, d, splits):
    q, k, v = _inputs(3, h, hkv, nq, 45, d, seed=h + nq + d)
    lengths = torch.tensor([45, 17, 5], device=DEVICE)
    out, lse = decode_attention(q, k, v, lengths, scale=0.3, splits=splits, return_lse=True)
    want, want_lse = ref.attention(q, k, v, lengths, scale=0.3)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert _rel(out, want) < TOL[torch.float32]
    torch.testing.assert_close(lse, want_lse, atol=1e-5, rtol=1e-5)


def test_split_kv_decode_ignores_cache_slots_past_each_length():
    q, k, v = _inputs(2, 2, 2, 1, 40, 16, seed=1)
    lengths = torch.tensor([23, 9], device=DEVICE)
    before = decode_attention(q, k, v, lengths, splits=4)
    k[0, :, 23:], v[1, :, 9:] = 1e4, float("nan")
    assert torch.equal(decode_attention(q, k, v, lengths, splits=4), before)


@pytest.mark.parametrize("splits", [1, 2, 7])
def test_split_kv_decode_equals_torch_sdpa_on_a_full_cache(splits):
    q, k, v = _inputs(2, 4, 4, 1, 50, 32, seed=splits)
    out = decode_attention(q, k, v, splits=splits)
    assert _rel(out, F.scaled_dot_product_attention(q, k, v)) < 1e-5


def test_split_plan_covers_the_cache_in_whole_key_blocks():
    for nk, groups, splits in [(1, 1, None), (45, 3, 5), (4096, 64, None), (100, 1, 1000)]:
        split, n = plan(nk, groups, 16, torch.device("cpu"), splits)
        assert split % 16 == 0 and n * split >= nk and (n - 1) * split < nk


def test_bad_inputs_name_the_problem():
    q, k, v = _inputs(1, 3, 2, 1, 8, 16)
    with pytest.raises(ValueError, match="do not group"):
        decode_attention(q, k, v)
    q, k, v = _inputs(1, 2, 2, 1, 8, 16)
    with pytest.raises(ValueError, match="lengths must be"):
        decode_attention(q, k, v, torch.tensor([3.0, 4.0], device=DEVICE))
    with pytest.raises(ValueError, match="decode wants"):
        decode_attention(q, k[..., :8], v)


def test_dispatch_falls_back_off_cuda_when_disabled_or_with_gradients(monkeypatch):
    q, k, v = _inputs(1, 2, 2, 1, 8, 16)
    if not CUDA:
        assert dispatch.attention(q, k, v) is None
    monkeypatch.setattr(dispatch, "on_device", lambda *t: True)
    assert dispatch.attention(q, k, v) is not None
    assert dispatch.attention(q, k, v.requires_grad_()) is None
    monkeypatch.setenv("ARCHGRAM_KERNELS", "off")
    assert dispatch.attention(q, k, v.detach()) is None


@pytest.mark.parametrize("position", ["none", "rope"])
def test_attention_op_kv_cache_decoding_uses_the_kernel(monkeypatch, kernel_calls, position):
    from archgram.ops.attention.decode import decode
    from archgram.ops.attention.op import Attention

    calls = kernel_calls(dispatch, "attention")
    torch.manual_seed(0)
    op = Attention((2, 7, 32), heads=2, position={"name": position}, causal=True).to(DEVICE)
    x = torch.randn(2, 7, 32, device=DEVICE)
    with torch.no_grad():
        fast = decode(op, x)
        monkeypatch.setenv("ARCHGRAM_KERNELS", "off")
        slow = op(x)
    assert len(calls) == 7 and all(calls)
    assert _rel(fast, slow) < 1e-5


@needs_cuda
@pytest.mark.parametrize("dtype,d,h,hkv,nq", [(torch.bfloat16, 128, 32, 8, 1), (torch.bfloat16, 128, 16, 1, 4),
                                               (torch.float16, 64, 8, 8, 1), (torch.float32, 64, 32, 8, 1)])
def test_split_kv_decode_long_caches_on_gpu(dtype, d, h, hkv, nq):
    q, k, v = _inputs(4, h, hkv, nq, 8192, d, dtype=dtype, seed=d + h)
    lengths = torch.tensor([8192, 5000, 77, 1], device=DEVICE) + nq - 1
    lengths = lengths.clamp(max=8192)
    out = decode_attention(q, k, v, lengths)
    want, _ = ref.attention(q, k, v, lengths)
    assert _rel(out, want) < TOL[dtype]


# ------------------------------------------------------------------ Lean Attention (stream-K)
from archgram.kernels.decode.lean import key_block, lean_attention, stream_k_ranges, tile_starts  # noqa: E402


@pytest.mark.parametrize("h,hkv,nq,d,programs", [
    (4, 2, 1, 32, 4),     # programs cross tile boundaries
    (4, 1, 3, 24, 5),     # MQA, three new tokens (causal among them), odd head dim
    (2, 2, 1, 16, 13),    # more programs than key blocks: idle programs
    (8, 2, 2, 16, 2),     # each program spans several tiles
    (4, 2, 1, 32, None),  # the default: two waves of the device
])
def test_lean_attention_matches_naive_softmax_with_ragged_lengths(h, hkv, nq, d, programs):
    q, k, v = _inputs(3, h, hkv, nq, 45, d, seed=h + nq + d)
    lengths = torch.tensor([45, 17, 5], device=DEVICE)
    out, lse = lean_attention(q, k, v, lengths, scale=0.3, programs=programs, return_lse=True)
    want, want_lse = ref.attention(q, k, v, lengths, scale=0.3)
    assert out.shape == q.shape and _rel(out, want) < TOL[torch.float32]
    torch.testing.assert_close(lse, want_lse, atol=1e-5, rtol=1e-5)


def test_lean_attention_balances_ragged_work_where_split_kv_cannot():
    """Lean Attention's claim: stream-K gives every program an equal share of all
    key blocks whatever the context lengths (counted by the kernel itself: loads
    differ by at most one block), while flash-decoding's equal splits per sequence,
    given the same number of programs, load the long sequence's programs 2.5x more."""
    b = key_block()  # 16 under the interpreter, 64 on a GPU
    lengths = torch.tensor([10 * b, b, b, b], device=DEVICE)  # 10, 1, 1, 1 key blocks
    q, k, v = _inputs(4, 2, 1, 1, 10 * b, 16, seed=3)
    split, n_split = plan(10 * b, 4, b, torch.device("cpu"), 2)  # flash-decoding: 2 splits x 4 sequences
    split_loads = [-(-max(0, min(n, (s + 1) * split) - s * split) // b) for n in lengths.tolist() for s in range(n_split)]
    out, work = lean_attention(q, k, v, lengths, programs=len(split_loads), return_work=True)
    assert _rel(out, ref.attention(q, k, v, lengths)[0]) < 1e-5
    total = int(tile_starts(lengths, 1, b)[-1])
    assert work.tolist() == [hi - lo for lo, hi in stream_k_ranges(total, len(split_loads))]
    assert sum(work.tolist()) == total == sum(split_loads) == 13
    assert max(work.tolist()) - min(work.tolist()) <= 1 and max(work.tolist()) == 2
    assert max(split_loads) == 5  # one program runs half of the longest sequence


@needs_cuda
@pytest.mark.parametrize("dtype,d,h,hkv,nq", [(torch.bfloat16, 128, 32, 8, 1), (torch.float16, 64, 8, 8, 1),
                                               (torch.float32, 64, 32, 8, 1), (torch.bfloat16, 128, 16, 1, 4)])
def test_lean_attention_long_ragged_caches_on_gpu(dtype, d, h, hkv, nq):
    q, k, v = _inputs(4, h, hkv, nq, 8192, d, dtype=dtype, seed=d + h)
    lengths = (torch.tensor([8192, 5000, 77, 1], device=DEVICE) + nq - 1).clamp(max=8192)
    out = lean_attention(q, k, v, lengths)
    want, _ = ref.attention(q, k, v, lengths)
    assert _rel(out, want) < TOL[dtype]
