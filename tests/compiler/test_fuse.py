"""The attention fusion pass (FuseMax, S55): attention written with einspace's
primitives is found, described as a cascade of Einsums, and lowered to one
fused attention call that computes the same function with the same parameters;
near misses (wrong softmax axis, no softmax, ...) are left alone."""
from __future__ import annotations

import json
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernel module is imported

import archgram  # noqa: E402
from archgram.compiler.passes import get_pass  # noqa: E402
from archgram.compiler.passes.attention import (  # noqa: E402
    HeadsMatch,
    find_attention,
    find_fusions,
    one_pass_reference,
)
from archgram.compiler.passes.lower import FusedAttention, FusedHeads, fuse_attention, set_backend  # noqa: E402
from archgram.errors import CompileError  # noqa: E402
from archgram.grammar.model import Grammar  # noqa: E402

pytestmark = pytest.mark.catalog("S55")

Q, K, V = "q : linear(out=16)\n", "k : linear(out=16) permute(order=(0,2,1))\n", "v : linear(out=24)\n"
ATTENTION = "net : clone(2) p v matmul\np : clone(2) q k matmul(scaled=true) softmax\n" + Q + K + V

POSITIVE = {
    # the plain einspace form: softmax(Q K^T / sqrt(d)) V
    "scaled": (ATTENTION, (2, 10, 8)),
    # extra constant scales, no scaled matmul, a prefix before the scores, identities around
    "scale_ops_prefix": ("net : clone(2) p v matmul(scaled=true)\n"
                         "p : linear(out=12) identity clone(2) q k matmul scale(value=0.25) scale(value=2.0) softmax identity\n"
                         + Q + K + V, (2, 10, 8)),
    # image layout: linear on channels, attention over W within each (b, c, h)
    "image": ("net : clone(2) p v matmul\np : clone(2) q k matmul(scaled=true) softmax\nq : linear(out=4)\n"
              "k : linear(out=4) permute(order=(0,1,3,2))\nv : linear(out=4)\n", (2, 3, 6, 5)),
    # Q and K from different halves of the channels (group split)
    "group_split": ("net : clone(2) p v matmul\np : group(2, dim=2) q k matmul(scaled=true) softmax\n" + Q + K + V,
                    (2, 10, 8)),
    # transposed output: O^T = V^T @ P^T
    "transposed": ("net : clone(2) vt p matmul(scaled=true)\nvt : linear(out=24) permute(order=(0,2,1))\n"
                   "p : clone(2) q k matmul(scaled=true) softmax permute(order=(0,2,1))\n" + Q + K, (2, 10, 8)),
    # attention whose query is itself an attention's output (nested matches)
    "nested": ("net : clone(2) p v matmul\np : clone(2) inner k matmul(scaled=true) softmax\n"
               "inner : clone(2) ip iv matmul linear(out=16)\nip : clone(2) q k matmul softmax\niv : linear(out=8)\n"
               + Q + K + V, (2, 10, 8)),
}

NEAR_MISSES = {
    # softmax over the query axis i (permute, softmax, permute back): not attention
    "softmax_wrong_axis": "p : clone(2) q k matmul(scaled=true) permute(order=(0,2,1)) softmax permute(order=(0,2,1))\n",
    "no_softmax": "p : clone(2) q k matmul(scaled=true)\n",
    "activation_after_softmax": "p : clone(2) q k matmul(scaled=true) softmax leakyrelu\n",
    "op_between_scores_and_softmax": "p : clone(2) q k matmul(scaled=true) posenc softmax\n",
    "scores_not_a_matmul": "p : clone(2) q qq add linear(out=10) softmax\nqq : linear(out=16)\n",
}


def _derivation(text: str, shape: tuple, seed: int = 0):
    return Grammar.from_text(text).sample(shape, seed=seed)


def _pair(d, **kw):
    """Unfused and fused networks with the same parameters."""
    plain = archgram.compile(d)
    fused = archgram.compile(d, fuse=True, **kw)
    fused.load_state_dict(plain.state_dict())
    return plain, fused


def _count(net, cls) -> int:
    return sum(isinstance(m, cls) for m in net.modules())


@pytest.mark.parametrize("case", sorted(POSITIVE))
def test_fused_attention_equals_unfused_network(case):
    text, shape = POSITIVE[case]
    d = _derivation(text, shape)
    matches = find_attention(d)
    assert matches and matches[-1].path == "root/0"
    plain, fused = _pair(d)
    assert _count(fused, FusedAttention) == len(matches)
    assert list(plain.state_dict()) == list(fused.state_dict()), "fusion must keep the state_dict keys"
    torch.manual_seed(1)
    x = 4 * torch.randn(shape)  # large enough that the softmax is far from uniform
    with torch.no_grad():
        torch.testing.assert_close(fused(x), plain(x), rtol=1e-5, atol=1e-5)


def test_fusing_in_place_keeps_the_very_same_parameters():
    d = _derivation(ATTENTION, (2, 10, 8))
    net = archgram.compile(d)
    before = {k: v.data_ptr() for k, v in net.state_dict().items()}
    x = torch.randn(2, 10, 8)
    with torch.no_grad():
        ref = net(x)
    assert len(fuse_attention(net, d)) == 1
    assert {k: v.data_ptr() for k, v in net.state_dict().items()} == before
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref, rtol=1e-5, atol=1e-5)


def test_fused_network_trains_with_the_same_gradients():
    d = _derivation(POSITIVE["scale_ops_prefix"][0], (2, 10, 8))
    plain, fused = _pair(d)
    x = torch.randn(2, 10, 8)
    plain(x).square().mean().backward()
    fused(x).square().mean().backward()
    grads = dict(plain.named_parameters())
    for name, p in fused.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-4, atol=1e-6)


def test_fused_output_matches_the_naive_attention_formula():
    """Independent oracle: softmax(Q K^T / sqrt(d)) V from the weights by hand."""
    d = _derivation(ATTENTION, (2, 10, 8))
    net = archgram.compile(d, fuse=True)
    lin = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    wq, wk, wv = lin  # arms in order: q, k (inside the scores branch), then v
    x = torch.randn(2, 10, 8)
    q, k, v = wq(x), wk(x), wv(x)
    ref = torch.softmax(q @ k.transpose(1, 2) / 4.0, dim=-1) @ v
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", sorted(NEAR_MISSES))
def test_near_misses_are_not_fused(case):
    text = "net : clone(2) p v matmul\n" + NEAR_MISSES[case] + Q + K + V
    d = _derivation(text, (2, 10, 8))
    assert find_fusions(d) == []
    plain, fused = _pair(d)
    assert _count(fused, FusedAttention) == 0
    x = torch.randn(2, 10, 8)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), plain(x))


def test_heads_concatenated_on_the_last_axis_run_as_one_multi_head_call():
    text = "net : group(2, dim=2) head*2 concat(dim=2)\nhead : clone(2) p v matmul\n" \
           "p : clone(2) q k matmul(scaled=true) softmax\n" + Q + K + V
    d = _derivation(text, (2, 10, 8))
    heads = [m for m in find_fusions(d) if isinstance(m, HeadsMatch)]
    assert len(heads) == 1 and len(heads[0].heads) == 2 and heads[0].path == "root/0"
    assert "Out[b,i,(h,e)] = O[b,h,i,e]" in heads[0].cascade()
    plain, fused = _pair(d)
    assert _count(fused, FusedHeads) == 1
    x = torch.randn(2, 10, 8)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), plain(x), rtol=1e-5, atol=1e-5)


def test_heads_concatenated_on_another_axis_stay_separate_calls():
    text = "net : clone(2) head*2 concat(dim=1)\nhead : clone(2) p v matmul\n" \
           "p : clone(2) q k matmul(scaled=true) softmax\n" + Q + K + V
    d = _derivation(text, (2, 10, 8))
    assert not any(isinstance(m, HeadsMatch) for m in find_fusions(d))
    plain, fused = _pair(d)
    assert _count(fused, FusedHeads) == 0 and _count(fused, FusedAttention) == 2
    x = torch.randn(2, 10, 8)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), plain(x), rtol=1e-5, atol=1e-5)


def test_einspace_transformer_baseline_fuses_all_sixteen_heads():
    """einspace's own transformer seed, parsed into einspace.pcfg: 4 layers x 4 heads
    of clone -> linear projections -> scaled matmul -> softmax -> matmul."""
    from archgram.grammar.baselines import baseline

    d = baseline("vit", input_shape=(2, 3, 16, 16))
    assert d.grammar.get("name", "einspace").startswith("einspace")
    matches = find_fusions(d)
    assert sum(not isinstance(m, HeadsMatch) for m in matches) == 16
    assert sum(isinstance(m, HeadsMatch) for m in matches) == 4
    plain, fused = _pair(d)
    assert _count(fused, FusedHeads) == 4
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), plain(x), rtol=1e-4, atol=1e-4)


def test_sampled_einspace_derivations_compile_fused_with_equal_outputs():
    g = archgram.load_grammar("einspace")
    for seed in range(6):
        d = g.sample((2, 12, 16), seed=seed)
        plain, fused = _pair(d)
        x = torch.randn(2, 12, 16)
        with torch.no_grad():
            torch.testing.assert_close(fused(x), plain(x))


def test_one_pass_cascade_computes_the_unfused_attention():
    """The description is executable: FuseMax's one-pass cascade over key tiles
    (running max RM, denominator RD, numerator RNV) equals the unfused network."""
    d = _derivation(ATTENTION, (2, 10, 8))
    (m,) = find_attention(d)
    assert m.sizes() == {"b": 2, "i": 10, "j": 10, "d": 16, "e": 24} and m.scale == pytest.approx(0.25)
    assert m.cascade()[0] == "S[b,i,j] = 0.25 * Q[b,i,d] K[b,j,d]"
    assert any(line.startswith("RNV[b,i,e,j1+1]") for line in m.cascade(one_pass=True))
    net = archgram.compile(d, fuse=True)
    x = torch.randn(2, 10, 8, dtype=torch.float64)
    net.double()
    (fused,) = [mod for mod in net.modules() if isinstance(mod, FusedAttention)]
    with torch.no_grad():
        q, k, v = fused.qkv(x)
        for tile in (3, 4, 10):
            torch.testing.assert_close(one_pass_reference(q, k, v, m.scale, tile), net(x))


def test_flash_kernel_path_matches_unfused(monkeypatch, kernel_calls):
    """On CUDA (here: the interpreted Triton kernel on the CPU) the fused module
    calls archgram's flash kernel when it applies."""
    from archgram.kernels.flash import dispatch

    calls = kernel_calls(dispatch, "attention")  # False: the kernel declined and SDPA ran
    text = ATTENTION.replace("linear(out=24)", "linear(out=16)")
    d = _derivation(text, (1, 8, 8))
    plain, fused = _pair(d)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    plain, fused = plain.to(device), fused.to(device)
    assert set_backend(fused, "flash") == 1
    x = torch.randn(1, 8, 8, device=device)
    with torch.no_grad():
        out = fused(x)
        assert calls == [True], "the fused module did not use the flash kernel"
        torch.testing.assert_close(out, plain(x), rtol=1e-4, atol=1e-4)
        set_backend(fused, "sdpa")
        calls.clear()
        torch.testing.assert_close(fused(x), plain(x), rtol=1e-4, atol=1e-4)
        assert not calls


def test_unknown_backend_or_pass_is_refused():
    d = _derivation(ATTENTION, (2, 10, 8))
    with pytest.raises(CompileError, match="unknown attention backend 'cudnn'"):
        fuse_attention(archgram.compile(d), d, backend="cudnn")
    with pytest.raises(CompileError, match="unknown compiler pass 'fuse_everything'"):
        archgram.compile(d, fuse=["fuse_everything"])
    assert get_pass("fuse_attention").refs == ("S55",)


def test_cli_fusions_lists_the_cascade(tmp_path, capsys):
    from archgram.cli import run

    path = tmp_path / "d.json"
    path.write_text(_derivation(ATTENTION, (2, 10, 8)).to_json())
    assert run(["fusions", str(path)]) == 0
    out = capsys.readouterr().out
    assert "attention at root/0" in out and "S[b,i,j] = 0.25 * Q[b,i,d] K[b,j,d]" in out
    assert run(["fusions", str(path), "--json", "--one-pass"]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert item["kind"] == "attention" and item["sizes"]["e"] == 24 and len(item["cascade"]) == 8
    path.write_text(_derivation("net : clone(2) p v matmul\n" + NEAR_MISSES["no_softmax"] + Q + K + V, (2, 10, 8)).to_json())
    assert run(["fusions", str(path)]) == 0
    assert "no attention cascade found" in capsys.readouterr().out
    assert run(["fusions", str(tmp_path / "missing.json")]) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fused_model_is_faster_on_gpu():
    """8 x 1024 tokens x 256 channels, 4 heads of 64, bf16: one fused call beats
    4 x (matmul -> softmax -> matmul) and the concat."""
    text = ("net : clone(4) head*4 concat(dim=2)\nhead : clone(2) p v matmul\n"
            "p : clone(2) q k matmul(scaled=true) softmax\n"
            "q : linear(out=64)\nk : linear(out=64) permute(order=(0,2,1))\nv : linear(out=64)\n")
    d = _derivation(text, (8, 1024, 256))
    plain, fused = (m.cuda().to(torch.bfloat16) for m in _pair(d))
    assert _count(fused, FusedHeads) == 1
    x = torch.randn(8, 1024, 256, device="cuda", dtype=torch.bfloat16)

    def ms(net) -> float:
        times = []
        for _ in range(30):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            net(x)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        return sorted(times)[len(times) // 2]

    with torch.no_grad():
        torch.testing.assert_close(fused(x), plain(x), rtol=3e-2, atol=3e-2)
        ms(plain), ms(fused)  # warm-up
        assert ms(fused) < 0.9 * ms(plain)
