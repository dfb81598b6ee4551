"""Linear / recurrent attention rows against independent references: explicit
n x n formulas written here, naive loops, and properties from the papers
(recurrent == parallel, chunked == recurrence, FFT Toeplitz == matmul, ...)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from archgram.errors import ShapeError
from archgram.grammar.model import Grammar
from archgram.ops.attention import SCORES
from archgram.ops.attention.aaren import prefix_scan, recurrent
from archgram.ops.attention.linear_forms import chunked_causal, kernel_attention, kernel_attention_parallel
from archgram.ops.attention.patterns import Causal, Full
from archgram.ops.attention.random_features import toeplitz_fft
from archgram.ops.registry import get_op

ATTN = get_op("attention")
TOL = {"atol": 1e-9, "rtol": 1e-7}


def qkv(n=9, b=2, h=3, d=4, dv=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, h, n, e, generator=g, dtype=torch.float64) for e in (d, d, dv))


def score(name, heads=3, **params):
    torch.manual_seed(0)
    return SCORES.parts[name].build(heads, 4, **params).double()


def build(shape, **args):
    torch.manual_seed(0)
    return ATTN.build(shape, ATTN.bind(args)).double()


def tril(n):
    return torch.ones(n, n, dtype=torch.bool).tril()


def explicit(w, v, causal, normalize=True):
    """out_i = sum_j w_ij v_j (/ (sum_j w_ij + 1e-6), the scores' epsilon), w an
    explicit (B, H, n, n) matrix."""
    if causal:
        w = w * tril(w.shape[-1])
    out = w @ v
    return out / (w.sum(-1, keepdim=True) + 1e-6) if normalize else out


def stepped(sc, q, k, v):
    """Run the score's recurrent form over the sequence, token by token."""
    state, outs = None, []
    for t in range(q.shape[-2]):
        out, state = sc.step(state, q[..., t, :], k[..., t, :], v[..., t, :], scale=0.5)
        outs.append(out)
    return torch.stack(outs, dim=-2)


# ------------------------------------------------------------------ plain linear attention


@pytest.mark.parametrize("causal", [False, True])
def test_linear_attention_equals_the_explicit_formula(causal):
    q, k, v = qkv()
    w = (F.elu(q) + 1) @ (F.elu(k) + 1).transpose(-1, -2)
    out = score("linear").attend(q, k, v, tril(9) if causal else None, None, 0.5)
    torch.testing.assert_close(out, explicit(w, v, causal), **TOL)


def test_linear_attention_recurrent_equals_parallel():
    q, k, v = qkv(n=11)
    sc = score("linear")
    parallel = sc.parallel(q, k, v, 0.5, causal=True)
    torch.testing.assert_close(stepped(sc, q, k, v), parallel, **TOL)
    torch.testing.assert_close(sc.attend(q, k, v, None, None, 0.5, causal=True), parallel, **TOL)


def test_linear_score_inside_the_attention_op():
    m = build((2, 7, 12), heads=3, score={"name": "linear"}, causal=True)
    x = torch.randn(2, 7, 12, dtype=torch.float64)
    q, k, v = m.layout.qkv(x)
    w = (F.elu(q) + 1) @ (F.elu(k) + 1).transpose(-1, -2)
    torch.testing.assert_close(m(x), m.layout.out(explicit(w, v, causal=True)), **TOL)


# ------------------------------------------------------------------ Lightning (S04, S48)


def naive_decayed_recurrence(q, k, v, lam):
    """S_t = lambda S_{t-1} + k_t v_t^T, o_t = q_t S_t, one token at a time."""
    b, h, n, _ = q.shape
    s = torch.zeros(b, h, q.shape[-1], v.shape[-1], dtype=q.dtype)
    outs = []
    for t in range(n):
        s = lam.view(1, h, 1, 1) * s + k[..., t, :, None] * v[..., t, None, :]
        outs.append((q[..., t, None, :] @ s)[..., 0, :])
    return torch.stack(outs, dim=-2)


def decayed_matrix(n, lam, causal=True):
    d = torch.zeros(len(lam), n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            if j <= i or not causal:
                d[:, i, j] = lam ** abs(i - j)
    return d


@pytest.mark.parametrize("block", [1, 3, 4, 5, 7, 12, 16])
def test_lightning_chunked_equals_recurrence_and_decayed_matrix(block):
    """Lightning-2 tiling (intra-block masked + inter-block KV recurrence) is exact,
    whether or not the block size divides n = 12."""
    q, k, v = qkv(n=12)
    lam = torch.tensor([1.0, 0.9, 0.5], dtype=torch.float64)
    chunked = chunked_causal(q, k, v, block, lam)
    torch.testing.assert_close(chunked, naive_decayed_recurrence(q, k, v, lam), **TOL)
    matrix = (q @ k.transpose(-1, -2) * decayed_matrix(12, lam)) @ v
    torch.testing.assert_close(chunked, matrix, **TOL)
    torch.testing.assert_close(kernel_attention_parallel(q, k, v, causal=True, decay=lam), matrix, **TOL)


@pytest.mark.parametrize("block", [2, 5])
def test_lightning_bidirectional_decay_is_symmetric(block):
    q, k, v = qkv(n=10)
    lam = torch.tensor([1.0, 0.8, 0.3], dtype=torch.float64)
    out = kernel_attention(q, k, v, causal=False, decay=lam, normalize=False, block=block)
    matrix = (q @ k.transpose(-1, -2) * decayed_matrix(10, lam, causal=False)) @ v
    torch.testing.assert_close(out, matrix, **TOL)


@pytest.mark.catalog("S04", "S48")
def test_lightning_score_is_srmsnormed_silu_attention_with_the_tnl_decays():
    q, k, v = qkv(n=10)
    sc = score("lightning", block=4)
    lam = torch.exp(-8.0 * torch.arange(3, dtype=torch.float64) / 3)
    torch.testing.assert_close(sc.decay(), lam)
    raw = (F.silu(q) @ F.silu(k).transpose(-1, -2) * decayed_matrix(10, lam)) @ v
    expected = raw / torch.sqrt(raw.pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(sc.attend(q, k, v, tril(10), None, 0.5), expected, **TOL)
    torch.testing.assert_close(stepped(sc, q, k, v), expected, **TOL)


# ------------------------------------------------------------------ NaLaFormer (S21)


def nala_features(q, k, power=3.0):
    norm = q.norm(dim=-1, keepdim=True)
    p = power * (0.5 + torch.tanh(norm))
    qd = q / norm
    fq = torch.cat((qd.clamp(min=0) ** p, (-qd).clamp(min=0) ** p), -1)
    fk = torch.cat((k.clamp(min=0) ** 3, (-k).clamp(min=0) ** 3), -1)
    return fq, fk


@pytest.mark.catalog("S21")
@pytest.mark.parametrize("causal", [False, True])
def test_nala_equals_its_norm_aware_formula(causal):
    q, k, v = qkv()
    fq, fk = nala_features(q, k)
    out = score("nala").attend(q, k, v, None, None, 0.5, causal=causal)
    torch.testing.assert_close(out, explicit(fq @ fk.transpose(-1, -2), v, causal), atol=1e-6, rtol=1e-6)


@pytest.mark.catalog("S21")
def test_nala_larger_query_norm_gives_lower_entropy():
    """The paper's point: unlike plain linear attention, the distribution sharpens
    as the query norm grows (same direction)."""
    _, k, _ = qkv(n=32, b=1, h=1)
    direction = torch.tensor([[[[0.9, -0.3, 0.2, 0.25]]]], dtype=torch.float64)
    entropies = []
    for norm in (0.1, 0.5, 1.0, 2.0):
        fq, fk = score("nala").features(direction * norm, k, 0.5)
        w = fq @ fk.transpose(-1, -2)
        p = w / w.sum(-1, keepdim=True)
        entropies.append(float(-(p * p.clamp_min(1e-300).log()).sum()))
    assert entropies == sorted(entropies, reverse=True) and entropies[0] - entropies[-1] > 0.1
    plain = [score("linear").features(direction * s, k, 0.5)[0] for s in (1.0, 2.0)]
    assert not torch.allclose(*plain)  # (sanity: the comparison is not vacuous)


@pytest.mark.catalog("S21")
def test_nala_recurrent_equals_parallel():
    q, k, v = qkv(n=8)
    sc = score("nala")
    torch.testing.assert_close(stepped(sc, q, k, v), sc.parallel(q, k, v, 0.5, causal=True), atol=1e-6, rtol=1e-6)


# ------------------------------------------------------------------ Flowformer (S34)


def flow_reference(q, k, v):
    """The paper's equations with an explicit n x n capacity matrix A = phi(Q) phi(K)^T."""
    phq, phk = torch.sigmoid(q), torch.sigmoid(k)
    n = q.shape[-2]
    a = phq @ phk.transpose(-1, -2)
    incoming, outgoing = a.sum(-1), a.sum(-2)  # I_i, O_j
    conserved_in = (a / outgoing[..., None, :]).sum(-1)  # I^_i
    conserved_out = (a / incoming[..., :, None]).sum(-2).clamp(-1, 1)  # O^_j
    values = torch.softmax(conserved_out, -1)[..., None] * n * v
    return torch.sigmoid(conserved_in)[..., None] * ((a / incoming[..., None]) @ values)


def flow_causal_reference(q, k, v):
    """Causal form, position by position, each seeing only its prefix; flows are
    rescaled by the prefix length as in the official code."""
    phq, phk = torch.sigmoid(q), torch.sigmoid(k)
    n = q.shape[-2]
    i_t = torch.stack([(t + 1) / (phq[..., t, :] * phk[..., : t + 1, :].sum(-2)).sum(-1) for t in range(n)], -1)
    o_t = torch.stack([(t + 1) / (phk[..., t, :] * phq[..., : t + 1, :].sum(-2)).sum(-1) for t in range(n)], -1)
    outs = []
    exps = []
    for t in range(n):
        c = t + 1
        sink = (phq[..., t, :] * (phk[..., :c, :] * o_t[..., :c, None]).sum(-2)).sum(-1) / c
        source = ((phk[..., t, :] * (phq[..., :c, :] * i_t[..., :c, None]).sum(-2)).sum(-1) / c).clamp(-1, 1)
        exps.append(torch.exp(source))
        comp = torch.stack([exps[j] / sum(exps[: j + 1]) * (j + 1) for j in range(c)], -1)
        w = (phq[..., t, None, :] * phk[..., :c, :]).sum(-1) * i_t[..., t, None] / c
        outs.append(torch.sigmoid(sink)[..., None] * ((w * comp)[..., None] * v[..., :c, :]).sum(-2))
    return torch.stack(outs, -2)


@pytest.mark.catalog("S34")
def test_flow_attention_matches_the_paper_equations():
    q, k, v = qkv()
    torch.testing.assert_close(score("flow").attend(q, k, v, None, None, 0.5), flow_reference(q, k, v), atol=1e-5, rtol=1e-5)


@pytest.mark.catalog("S34")
def test_flow_causal_matches_prefix_equations_and_steps():
    q, k, v = qkv(n=7)
    sc = score("flow")
    parallel = sc.attend(q, k, v, tril(7), None, 0.5)
    torch.testing.assert_close(parallel, flow_causal_reference(q, k, v), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stepped(sc, q, k, v), parallel, **TOL)


# ------------------------------------------------------------------ Agent attention (S40)


@pytest.mark.catalog("S40")
def test_agent_attention_equals_its_two_softmax_formula():
    q, k, v = qkv(n=12)
    a = q.view(2, 3, 4, 3, 4).mean(-2)  # 4 agents: means of 3 consecutive queries
    agent_v = torch.softmax(a @ k.transpose(-1, -2) * 0.5, -1) @ v
    expected = torch.softmax(q @ a.transpose(-1, -2) * 0.5, -1) @ agent_v
    torch.testing.assert_close(score("agent", agents=4, dwc=0).attend(q, k, v, None, None, 0.5), expected, **TOL)


@pytest.mark.catalog("S40")
def test_agent_attention_with_one_agent_per_query_is_two_softmaxes_over_queries():
    q, k, v = qkv(n=6)
    out = score("agent", agents=6, dwc=0).attend(q, k, v, None, None, 0.5)
    inner = torch.softmax(q @ k.transpose(-1, -2) * 0.5, -1) @ v
    torch.testing.assert_close(out, torch.softmax(q @ q.transpose(-1, -2) * 0.5, -1) @ inner, **TOL)


@pytest.mark.catalog("S40")
def test_agent_module_is_two_biased_softmaxes_plus_dwc_of_the_values_on_an_image():
    """Han et al.'s agent attention module, through the op on a 4x4 image:
    O = softmax(Q A^T s + B2) softmax(A K^T s + B1) V + DWC(V), the agent biases
    per head and sized for the 16 tokens, DWC a 3x3 depthwise conv over the grid."""
    x = torch.randn(2, 8, 4, 4, dtype=torch.float64)
    m = build((2, 8, 4, 4), heads=2, score={"name": "agent", "agents": 4, "dwc": 3})
    sc = m.score
    with torch.no_grad():
        sc.agent_bias.normal_()
        sc.query_bias.normal_()
    assert sc.agent_bias.shape == (2, 4, 16) and sc.query_bias.shape == (2, 16, 4)
    t = x.flatten(2).transpose(1, 2)
    q, k, v = m.layout.qkv(t)
    s = 1 / math.sqrt(4)
    a = q.view(2, 2, 4, 4, 4).mean(-2)  # 4 agents: means of 4 consecutive query tokens
    agent_v = torch.softmax(a @ k.transpose(-1, -2) * s + sc.agent_bias, -1) @ v
    out = torch.softmax(q @ a.transpose(-1, -2) * s + sc.query_bias, -1) @ agent_v
    vimg = v.permute(0, 1, 3, 2).reshape(2, 8, 4, 4)
    dwc = F.conv2d(vimg, sc.dwc.weight, sc.dwc.bias, padding=1, groups=8).reshape(2, 2, 4, 16).permute(0, 1, 3, 2)
    want = m.layout.out(out + dwc, t).transpose(1, 2).reshape(2, 8, 4, 4)
    torch.testing.assert_close(m(x), want, **TOL)


@pytest.mark.catalog("S40")
def test_agent_attention_cost_is_linear_in_the_tokens():
    """The paper's efficiency claim: with a fixed number of agents the module costs
    O(n a d) -- measured FLOPs double when the sequence doubles."""
    from torch.utils.flop_counter import FlopCounterMode

    flops = []
    for n in (64, 128, 256):
        m = build((1, n, 16), heads=2, score={"name": "agent", "agents": 8})
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            m(torch.randn(1, n, 16, dtype=torch.float64))
        flops.append(counter.get_total_flops())
    assert flops[1] == 2 * flops[0] and flops[2] == 2 * flops[1]


# ------------------------------------------------------------------ Hebbian memory (S44)


@pytest.mark.catalog("S44")
def test_hebbian_memory_is_a_sum_of_outer_products():
    q, k, v = qkv()
    memory = torch.einsum("bhnv,bhnk->bhvk", v, k)  # M = sum_j v_j k_j^T
    expected = torch.einsum("bhvk,bhnk->bhnv", memory, q) * 0.5
    torch.testing.assert_close(score("hebbian").attend(q, k, v, None, None, 0.5), expected, **TOL)


@pytest.mark.catalog("S44")
def test_hebbian_retrieves_exactly_with_orthogonal_cues():
    """Orthonormal conditioned stimuli (keys) do not interfere: the test stimulus
    k_j retrieves the unconditioned stimulus v_j."""
    keys = torch.eye(4, dtype=torch.float64)[None, None]  # 4 orthonormal keys
    values = torch.randn(1, 1, 4, 3, dtype=torch.float64)
    out = score("hebbian", heads=1).attend(keys / 0.5, keys, values, None, None, 0.5)
    torch.testing.assert_close(out, values, **TOL)


@pytest.mark.catalog("S44")
def test_hebbian_decayed_recurrent_equals_parallel():
    q, k, v = qkv(n=10)
    sc = score("hebbian", decay=0.7)
    lam = torch.full((3,), 0.7, dtype=torch.float64)
    expected = (q @ k.transpose(-1, -2) * 0.5 * decayed_matrix(10, lam)) @ v
    torch.testing.assert_close(sc.attend(q, k, v, None, None, 0.5, causal=True), expected, **TOL)
    torch.testing.assert_close(stepped(sc, q, k, v), expected, **TOL)


# ------------------------------------------------------------------ kernelized RPE via FFT (S59)


@pytest.mark.parametrize("n", [1, 5, 8])
def test_fft_toeplitz_product_equals_the_explicit_toeplitz_matmul(n):
    g = torch.Generator().manual_seed(n)
    c = torch.randn(3, 2 * n - 1, generator=g, dtype=torch.float64)
    x = torch.randn(2, 3, n, 6, generator=g, dtype=torch.float64)
    t = torch.empty(3, n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            t[:, i, j] = c[:, i - j + n - 1]
    torch.testing.assert_close(toeplitz_fft(c, x), t @ x, **TOL)


@pytest.mark.catalog("S59")
@pytest.mark.parametrize("causal", [False, True])
def test_kernel_rpe_equals_the_explicit_formula_with_the_same_features(causal):
    q, k, v = qkv(n=9)
    sc = score("kernel_rpe", features=16, max_distance=3)
    with torch.no_grad():
        sc.rel_bias.copy_(torch.randn(3, 7, dtype=torch.float64))
    fq, fk = sc.features(q, k)
    rel = torch.arange(9)[:, None] - torch.arange(9)[None, :]
    c = torch.exp(sc.rel_bias[:, rel.clamp(-3, 3) + 3])  # C_ij = exp(b_{clip(i-j)})
    expected = explicit((fq @ fk.transpose(-1, -2)) * c, v, causal)
    torch.testing.assert_close(sc.attend(q, k, v, tril(9) if causal else None, None, 0.5), expected, **TOL)


@pytest.mark.catalog("S59")
def test_kernel_rpe_approximates_softmax_attention_with_rpe():
    """PRF features are unbiased for exp(q.k/sqrt d): with many features the score
    approaches softmax(q k^T / sqrt d + b_{i-j}) v."""
    q, k, v = (x * 0.5 for x in qkv(n=6, b=1, h=2))
    sc = score("kernel_rpe", heads=2, features=20000, max_distance=2)
    with torch.no_grad():
        sc.rel_bias.copy_(torch.randn(2, 5, dtype=torch.float64) * 0.5)
    rel = torch.arange(6)[:, None] - torch.arange(6)[None, :]
    bias = sc.rel_bias[:, rel.clamp(-2, 2) + 2]
    exact = torch.softmax(q @ k.transpose(-1, -2) / 2 + bias, -1) @ v
    out = sc.attend(q, k, v, None, None, 0.5)
    assert (out - exact).abs().max() < 0.05


@pytest.mark.catalog("S59")
def test_kernel_rpe_random_features_are_fixed_across_calls():
    q, k, v = qkv(n=5)
    sc = score("kernel_rpe", features=8)
    torch.testing.assert_close(sc.attend(q, k, v, None, None, 0.5), sc.attend(q, k, v, None, None, 0.5))


# ------------------------------------------------------------------ random frozen Q/K (S76)


@pytest.mark.catalog("S76")
def test_random_qk_heads_score_with_frozen_full_rank_gaussian_forms():
    """Each head's logit is x_i^T W_m x_j / sqrt(d) with W_m a d x d matrix of
    N(0, 1/d) entries -- full rank d, not the rank-head_dim product W_q^T W_k --
    distinct per head, held as a buffer that an optimiser step leaves unchanged,
    while the value side trains."""
    d, heads = 16, 4
    m = build((2, d, d), heads=heads, layout={"name": "random_qk"})
    x = torch.eye(d, dtype=torch.float64)[None]  # token i = e_i, so logit_ij = W_m[i, j] / sqrt(d)
    q, k, _ = m.layout.qkv(x)
    logits = m.score.logits(q, k, m.scale)[0]
    for h in range(heads):
        torch.testing.assert_close(logits[h], m.layout.form(h) / d**0.5)
        assert torch.linalg.matrix_rank(logits[h], rtol=1e-4) == d  # float32-drawn: float64 tolerance would see noise
    forms = m.layout.forms
    assert not torch.allclose(forms[0], forms[1])
    assert abs(forms.mean().item()) < 0.05 and abs(forms.std().item() * d**0.5 - 1) < 0.1
    names = {n for n, _ in m.named_parameters()}
    assert not any(n.startswith(("layout.q", "layout.k", "layout.forms")) for n in names)
    assert {"layout.v.weight", "layout.o.weight"} <= names and "layout.forms" in m.state_dict()
    before = forms.clone()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    m(torch.randn(2, d, d, dtype=torch.float64)).square().sum().backward()
    opt.step()
    torch.testing.assert_close(m.layout.forms, before)


def _query_features(m, x):
    """Per head, query token 0's attention-weighted sum of the tokens: the random
    features a head offers its trainable value map (B, heads * d)."""
    q, k, _ = m.layout.qkv(x)
    w = m.score.weights(m.score.logits(q, k, m.scale), None)
    return (w[:, :, :1, :] @ x[:, None])[:, :, 0].flatten(1)


@pytest.mark.catalog("S76")
def test_random_qk_fits_a_key_permutation_invariant_target_better_with_more_heads():
    """The paper's random-feature claim, small: with Q/K frozen at random and only
    the value side fitted (ridge regression, which is exact for the linear value
    map), a target of the query and the key set, f = mean_i <x_0, x_i><beta, x_i>
    (invariant to key order), is fitted on held-out data far better by 32
    random heads than by one, and well in absolute terms."""
    d, n = 8, 9
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, n, d, generator=g, dtype=torch.float64)
    beta = torch.randn(d, generator=g, dtype=torch.float64)
    keys = x[:, 1:]
    y = ((keys @ x[:, 0, :, None])[..., 0] * (keys @ beta)).mean(1)
    r2 = {}
    for heads in (1, 32):
        m = build((1, n, d), heads=heads, head_dim=2, layout={"name": "random_qk"})
        with torch.no_grad():
            f = _query_features(m, x)
        ftr, fte, ytr, yte = f[:1500], f[1500:], y[:1500], y[1500:]
        w = torch.linalg.solve(ftr.T @ ftr + 1e-3 * torch.eye(f.shape[1], dtype=f.dtype), ftr.T @ ytr)
        r2[heads] = 1 - ((fte @ w - yte) ** 2).mean().item() / yte.var().item()
    assert r2[1] < 0.3 and r2[32] > 0.55 and r2[32] > r2[1] + 0.3, r2


# ------------------------------------------------------------------ Aaren (S35)


@pytest.mark.catalog("S35")
def test_aaren_prefix_scan_equals_the_rnn_and_causal_softmax():
    """Aaren's claim: the learned-query attention over every prefix is an RNN whose
    associative combine lets a parallel prefix scan produce all outputs."""
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 3, 11, generator=g, dtype=torch.float64) * 3
    v = torch.randn(2, 3, 11, 4, generator=g, dtype=torch.float64)
    m, u, w = prefix_scan(s, v)
    scanned = w / u[..., None]
    logits = s[..., None, :].expand(2, 3, 11, 11).masked_fill(~tril(11), float("-inf"))
    softmax = torch.softmax(logits, -1) @ v  # row t: the learned query over x_1..x_t
    torch.testing.assert_close(scanned, softmax, **TOL)
    torch.testing.assert_close(recurrent(s, v), softmax, **TOL)
    torch.testing.assert_close(m, torch.cummax(s, -1).values)


@pytest.mark.catalog("S35")
def test_aaren_op_forward_and_step_agree():
    spec = get_op("aaren")
    torch.manual_seed(0)
    op = spec.build((2, 9, 12), spec.bind({"heads": 3})).double()
    x = torch.randn(2, 9, 12, dtype=torch.float64, requires_grad=True)
    y = op(x)
    assert y.shape == (2, 9, 12)
    state, steps = None, []
    for t in range(9):
        out, state = op.step(state, x[:, t])
        steps.append(out)
    torch.testing.assert_close(torch.stack(steps, 1), y, **TOL)
    y.sum().backward()
    assert op.query.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.catalog("S35")
def test_aaren_shape_rule():
    spec = get_op("aaren")
    assert spec.cls.output_shape((2, 9, 12), **spec.bind({"heads": 3})) == (2, 9, 12)
    with pytest.raises(ShapeError, match="split"):
        spec.cls.output_shape((2, 9, 12), **spec.bind({"heads": 5}))
    with pytest.raises(ShapeError):
        spec.cls.output_shape((2, 4, 3, 3), **spec.bind({}))


# ------------------------------------------------------------------ refusals and sampling

LINEAR = ["linear", "nala", "hebbian", "lightning", "flow", "agent", "kernel_rpe"]


@pytest.mark.catalog("S04", "S21", "S34", "S40", "S44", "S48", "S59")
@pytest.mark.parametrize("name", LINEAR)
def test_linear_scores_refuse_patterns_they_cannot_honour(name):
    with pytest.raises(ShapeError):
        ATTN.cls.output_shape((2, 10, 16), **ATTN.bind({"score": {"name": name}, "pattern": {"name": "window", "_0": 3}}))
    if name == "agent":
        with pytest.raises(ShapeError, match="non-causal"):
            SCORES.parts[name].check(Full(), True, {})
        with pytest.raises(ShapeError):
            SCORES.parts[name].check(Causal(), False, {})
    else:
        SCORES.parts[name].check(Causal(), True, {})


@pytest.mark.catalog("S04", "S21", "S34", "S40", "S44", "S48", "S59")
@pytest.mark.parametrize("name", LINEAR)
def test_linear_scores_refuse_additive_logit_biases(name):
    with pytest.raises(ShapeError, match="bias"):  # refused by the shape rule, before any forward
        build((1, 6, 16), heads=2, score={"name": name}, position={"name": "alibi"})


@pytest.mark.catalog("S04", "S21", "S34", "S40", "S44", "S48", "S59")
@pytest.mark.parametrize("name", LINEAR)
def test_linear_scores_backpropagate_finite_gradients_in_the_op(name):
    m = build((2, 8, 16), heads=2, score={"name": name}, causal=name != "agent", position={"name": "rope"})
    x = torch.randn(2, 8, 16, dtype=torch.float64, requires_grad=True)
    m(x).sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.catalog("S40")
def test_sampler_pairs_linear_scores_only_with_full_or_causal_patterns():
    g = Grammar.from_text("net : attention(heads=2, score=linear|lightning(4)|agent(4), pattern=full|causal|window(3))\n")
    seen = set()
    for seed in range(30):
        args = g.sample((2, 8, 16), seed=seed).ops()[0].args
        seen.add((args["score"]["name"], args["pattern"]["name"]))
    assert all(p in ("full", "causal") for _, p in seen)
    assert ("agent", "causal") not in seen and len(seen) >= 3


@pytest.mark.catalog("S04", "S21", "S34", "S40", "S44", "S48", "S59")
def test_shipped_attention_grammar_offers_the_linear_scores():
    from importlib import resources

    g = Grammar.from_text(resources.files("archgram.grammars").joinpath("attention.pcfg").read_text())
    offered = set()
    for prod in g.rules["mixer"].productions:
        for term in prod.elems:
            if "score" in getattr(term, "args", {}):
                offered |= {value["name"] for value in term.args["score"].values}
    assert set(LINEAR) <= offered
