"""Chunked causal linear attention in Triton (Lightning Attention-2, S48).

One program per (value block, batch*head) walks the sequence chunk by chunk
(``BT`` tokens), keeping the state S (Dk x BV, fp32) in registers:

  intra  O_c  = [(Q_c K_c^T) (.) W_c] V_c,   W_c[i, j] = exp(b_i - b_j), j <= i
  inter  O_c += (Q_c (.) exp(b)) S
  state  S    = exp(b_last) S + (K_c (.) exp(b_last - b))^T V_c

with b the chunk-local inclusive cumulative log decay (per-head constant
log lambda plus an optional per-token gate; see ``reference``). Every exponent
is <= 0, so nothing overflows however long the sequence.

``REVERSE`` walks the sequence backwards (the anti-causal sum over i >= j) by
pointer arithmetic alone; the backward pass is three runs of this one kernel:

  dq = fwd(do, v, k)                         causal
  dk = fwd(v, do, q),  dv = fwd(k, q, do)    anti-causal (REVERSE)
  da_t = sum_{m >= t} (q_m . dq_m - k_m . dk_m)   the decay/gate gradient,

its per-token dots summed by the dq and dk runs themselves (``ROW_DOT``).

That walk is serial over chunks: with few (batch x head) programs, as at one
64k-token sequence, most of the GPU idles. Then the sequence is cut into
segments walked in parallel by the same kernel, in three launches:

  states  U_s = segment s's own final state (from zero), T_s its total log decay
  scan    S_s = exp(T_(s-1)) S_(s-1) + U_(s-1)        serial over the few segments
  output  walk segment s again from S_s, writing O      one program per segment

That costs one extra read of K and V; ``segments`` picks the count.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from archgram.kernels.launch import dot_precision, interpreting, launch_fitting, pow2, sm_count

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_KEY_DIM = 256  # the state block Dk x BV lives in registers


@triton.jit
def _chunk_decay(G, pid_bh, N, pos, ok, loglam, BT: tl.constexpr, HAS_GATE: tl.constexpr, REVERSE: tl.constexpr):
    """(cum, total): the chunk-local inclusive cumulative log decay and its sum.
    Reversed, token t's gate sits between t-1 and t, so it is read one ahead."""
    a = tl.zeros([BT], dtype=tl.float32) + loglam
    if HAS_GATE:
        if REVERSE:
            gpos = pos + 1
        else:
            gpos = pos
        a += tl.load(G + pid_bh * N + gpos, mask=ok & (gpos < N), other=0.0)
    a = tl.where(ok, a, 0.0)
    return tl.cumsum(a, 0), tl.sum(a, 0)


@triton.jit
def _chunk_fwd(
    Q, K, V, G, LOGLAM, Out, S_IN, S_OUT, TOT, X, DOT,
    sqb, sqh, sqn, sqd,
    skb, skh, skn, skd,
    svb, svh, svn, svd,
    sob, soh, son, sod,
    H, N, DK, DV, SEG, NS, scale,
    BK: tl.constexpr, BV: tl.constexpr, BT: tl.constexpr,
    HAS_DECAY: tl.constexpr, HAS_GATE: tl.constexpr, REVERSE: tl.constexpr, STORE_STATE: tl.constexpr,
    HAS_INIT: tl.constexpr, STATE_ONLY: tl.constexpr, ROW_DOT: tl.constexpr, PRECISION: tl.constexpr,
):
    """Walk segment ``pid_seg`` (tokens [seg * SEG, (seg + 1) * SEG) in walking
    order) chunk by chunk. HAS_INIT: start from S_IN[bh, seg] instead of zero;
    STATE_ONLY: skip the outputs and store the segment's own final state (and
    its total log decay in TOT) for the scan across segments. ROW_DOT: also
    store this value block's share of rowsum(X * Out) per token in
    DOT[bh, pid_v, token] from the fp32 accumulator (X has Out's strides): the
    decay gradient's q . dq and k . dk without a fp32 copy of dq, dk."""
    pid_v = tl.program_id(0)
    pid_bh = tl.program_id(1)
    pid_seg = tl.program_id(2)
    b = pid_bh // H
    h = pid_bh % H
    offs_t = tl.arange(0, BT)
    offs_k = tl.arange(0, BK)
    offs_v = pid_v * BV + tl.arange(0, BV)
    k_ok = offs_k < DK
    v_ok = offs_v < DV
    causal = offs_t[:, None] >= offs_t[None, :]
    q_base = Q + b * sqb + h * sqh
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh
    o_base = Out + b * sob + h * soh
    tile = (pid_bh * NS + pid_seg) * DK * DV + offs_k[:, None] * DV + offs_v[None, :]
    tile_ok = k_ok[:, None] & v_ok[None, :]
    if HAS_INIT:
        state = tl.load(S_IN + tile, mask=tile_ok, other=0.0)
    else:
        state = tl.zeros([BK, BV], dtype=tl.float32)
    loglam = 0.0
    if HAS_DECAY:
        loglam = tl.load(LOGLAM + h)
    seg_total = 0.0
    for start in range(pid_seg * SEG, tl.minimum(N, pid_seg * SEG + SEG), BT):
        rows = start + offs_t
        ok = rows < N
        if REVERSE:
            pos = N - 1 - rows
        else:
            pos = rows
        k = tl.load(k_base + pos[:, None] * skn + offs_k[None, :] * skd, mask=ok[:, None] & k_ok[None, :], other=0.0)
        v = tl.load(v_base + pos[:, None] * svn + offs_v[None, :] * svd, mask=ok[:, None] & v_ok[None, :], other=0.0)
        if HAS_DECAY or HAS_GATE:
            cum, total = _chunk_decay(G, pid_bh, N, pos, ok, loglam, BT, HAS_GATE, REVERSE)
            k_in = k.to(tl.float32) * tl.exp(total - cum)[:, None]
            seg_total += total
        else:
            k_in = k.to(tl.float32)
        if not STATE_ONLY:
            q = tl.load(q_base + pos[:, None] * sqn + offs_k[None, :] * sqd, mask=ok[:, None] & k_ok[None, :],
                        other=0.0)
            qk = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
            if HAS_DECAY or HAS_GATE:
                qk = qk * tl.exp(tl.where(causal, cum[:, None] - cum[None, :], float("-inf")))
                q_in = q.to(tl.float32) * (tl.exp(cum) * scale)[:, None]
            else:
                qk = tl.where(causal, qk, 0.0)
                q_in = q.to(tl.float32) * scale
            out = tl.dot(qk.to(v.dtype), v, input_precision=PRECISION)
            out += tl.dot(q_in.to(v.dtype), state.to(v.dtype), input_precision=PRECISION)
            o_off = pos[:, None] * son + offs_v[None, :] * sod
            tl.store(o_base + o_off, out.to(Out.dtype.element_ty), mask=ok[:, None] & v_ok[None, :])
            if ROW_DOT:
                x = tl.load(X + b * sob + h * soh + o_off, mask=ok[:, None] & v_ok[None, :], other=0.0)
                tl.store(DOT + (pid_bh * tl.num_programs(0) + pid_v) * N + pos, tl.sum(out * x.to(tl.float32), 1),
                         mask=ok)
        if HAS_DECAY or HAS_GATE:
            state = state * tl.exp(total)
        state += tl.dot(tl.trans(k_in.to(v.dtype)), v, input_precision=PRECISION)
    if STORE_STATE:
        tl.store(S_OUT + tile, state, mask=tile_ok)
    if STATE_ONLY and (HAS_DECAY or HAS_GATE):
        if pid_v == 0:
            tl.store(TOT + pid_bh * NS + pid_seg, seg_total)


@triton.jit
def _split_scan(U, TOT, S_OUT, NC, DK, DV,
                BKS: tl.constexpr, BV: tl.constexpr, DECAYS: tl.constexpr, STORE_STATE: tl.constexpr):
    """In place over U: the state entering segment c, S_c = exp(TOT[c-1]) S_(c-1) + U_(c-1),
    from each segment's own final state U_c. Serial over the (few) segments,
    elementwise on a (BKS x BV) tile; the next U is loaded before this one is used."""
    pid_v = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_bh = tl.program_id(2)
    offs_k = pid_k * BKS + tl.arange(0, BKS)
    offs_v = pid_v * BV + tl.arange(0, BV)
    tile_ok = (offs_k < DK)[:, None] & (offs_v < DV)[None, :]
    tile = offs_k[:, None] * DV + offs_v[None, :]
    base = U + pid_bh * NC * DK * DV
    state = tl.zeros([BKS, BV], dtype=tl.float32)
    u = tl.load(base + tile, mask=tile_ok, other=0.0)
    for c in range(NC):
        u_next = tl.load(base + tl.minimum(c + 1, NC - 1) * DK * DV + tile, mask=tile_ok, other=0.0)
        tl.store(base + c * DK * DV + tile, state, mask=tile_ok)
        if DECAYS:
            state = state * tl.exp(tl.load(TOT + pid_bh * NC + c))
        state += u
        u = u_next
    if STORE_STATE:
        tl.store(S_OUT + pid_bh * DK * DV + tile, state, mask=tile_ok)


# (BT chunk, BV value block, num_warps, num_stages) per key-dim bucket (pow2,
# at least 64), picked by experiments/kernels/tune_linear.py on an H200
# (fwd+bwd at 16 x 4096 tokens; 4 warps at D=128 is 1.8x faster than 8).
CONFIGS = {64: (64, 64, 4, 3), 128: (64, 64, 4, 2), 256: (64, 64, 8, 2)}


def smaller(cfg):
    """The next config to try when the compiler finds ``cfg`` too large for the
    GPU (``launch.launch_fitting``): fewer stages, then half the value block
    (down to 16), then half the chunk (down to 16); None when nothing is left.
    The table fits 2-byte inputs; fp32 at key dims 129-256 needs less."""
    bt, bv, warps, stages = cfg
    if stages > 1:
        return bt, bv, warps, stages - 1
    if bv > 16:
        return bt, bv // 2, warps, stages
    return (bt // 2, bv, warps, stages) if bt > 16 else None


def config(dk: int, dv: int) -> tuple[int, int, int, int]:
    """(BT chunk, BV value block, num_warps, num_stages) for these head dims."""
    if interpreting():
        return 16, min(pow2(dv), 16), 1, 1
    bt, bv, warps, stages = CONFIGS[max(64, pow2(dk))]
    return bt, min(bv, pow2(dv)), warps, stages


def check_inputs(q, k, v, log_decay=None, gate=None) -> None:
    """ValueError naming the first thing the kernel cannot take."""
    if q.dim() != 4 or k.shape != q.shape or v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"linear attention wants q, k (B, H, N, Dk) and v (B, H, N, Dv); got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.dtype not in DTYPES or not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"unsupported dtypes {q.dtype}, {k.dtype}, {v.dtype} (float32/16, bfloat16, all equal)")
    if q.shape[-1] > MAX_KEY_DIM:
        raise ValueError(f"key dim {q.shape[-1]} > {MAX_KEY_DIM}: the state would not fit in registers")
    if log_decay is not None and log_decay.shape != (q.shape[1],):
        raise ValueError(f"log_decay must be (H,) = ({q.shape[1]},), got {tuple(log_decay.shape)}")
    if gate is not None and gate.shape != q.shape[:3]:
        raise ValueError(f"gate must be (B, H, N) = {tuple(q.shape[:3])}, got {tuple(gate.shape)}")


PATHS = ("auto", "fused", "split")
MIN_SEGMENT_CHUNKS = 4  # shorter segments pay the extra K, V pass for little parallelism


def segments(bsz: int, h: int, n: int, dv: int, bt: int, bv: int, device, path: str = "auto") -> int:
    """How many segments the sequence is cut into (1: the plain fused walk).

    One program per (value block, batch*head) walks its sequence serially; when
    those programs leave over 40% of the SMs idle, the sequence is cut into
    segments walked in parallel (about two waves), each at least
    ``MIN_SEGMENT_CHUNKS`` chunks long. Cutting reads K and V twice and costs
    1.6-1.7x the fused walk's time per token on a full device (H200,
    experiments/kernels/bench_linear.md), so a device 60% busy is already
    better off walking. ``path="split"`` forces at least two."""
    if path == "fused":
        return 1
    sms = sm_count(torch.device(device))
    programs = bsz * h * triton.cdiv(dv, bv)
    chunks = triton.cdiv(n, bt)
    want = triton.cdiv(2 * sms, programs)
    if path == "split":
        return max(2, min(want, chunks)) if chunks >= 2 else 1
    if programs * 5 >= sms * 3:
        return 1
    return max(1, min(want, chunks // MIN_SEGMENT_CHUNKS))


def chunk_forward(q, k, v, *, log_decay=None, gate=None, scale: float = 1.0, reverse: bool = False,
                  return_state: bool = False, row_dot=None, chunk: int | None = None, path: str = "auto"):
    """(out (B, H, N, Dv), final state (B, H, Dk, Dv) float32 or None, and
    rowsum(row_dot * out) (B, H, N) float32 if ``row_dot`` (shaped like out) is
    given, else None). No autograd: see ``linear_attention``. ``reverse``
    computes the anti-causal sum over i >= j (the gate shifted by one token, as
    the backward pass needs). ``path`` forces one serial walk ("fused") or
    segments walked in parallel ("split"); see ``segments``."""
    check_inputs(q, k, v, log_decay, gate)
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    bsz, h, n, dk = q.shape
    dv = v.shape[-1]
    out = torch.empty(bsz, h, n, dv, device=q.device, dtype=q.dtype)
    if row_dot is not None and row_dot.shape != out.shape:
        raise ValueError(f"row_dot must be shaped like the output {tuple(out.shape)}, got {tuple(row_dot.shape)}")
    state = torch.empty(bsz, h, dk, dv, device=q.device, dtype=torch.float32) if return_state else out
    lam = log_decay.to(device=q.device, dtype=torch.float32).contiguous() if log_decay is not None else out
    g = gate.to(device=q.device, dtype=torch.float32).contiguous() if gate is not None else out

    def run(cfg):
        bt, bv, warps, stages = cfg
        bt = chunk or bt
        ns = segments(bsz, h, n, dv, bt, bv, q.device, path)
        seg = triton.cdiv(triton.cdiv(n, bt), ns) * bt  # tokens per segment, whole chunks
        ns = triton.cdiv(n, seg)
        decays = log_decay is not None or gate is not None
        nvb = triton.cdiv(dv, bv)
        launch = _chunk_fwd[(nvb, bsz * h, ns)]
        x = row_dot.contiguous() if row_dot is not None else out  # out is contiguous: X shares its strides
        dots = torch.empty(bsz * h, nvb, n, device=q.device, dtype=torch.float32) if row_dot is not None else out
        common = dict(BK=pow2(dk), BV=bv, BT=bt, HAS_DECAY=log_decay is not None, HAS_GATE=gate is not None,
                      REVERSE=bool(reverse), ROW_DOT=row_dot is not None, PRECISION=dot_precision(q.dtype),
                      num_warps=warps, num_stages=stages)
        strides = (*q.stride(), *k.stride(), *v.stride(), *out.stride())

        def result():
            dot = dots.sum(1).view(bsz, h, n) if row_dot is not None else None
            return out, (state if return_state else None), dot

        if ns == 1:
            launch(q, k, v, g, lam, out, out, state, out, x, dots, *strides, h, n, dk, dv, seg, 1, float(scale),
                   STORE_STATE=bool(return_state), HAS_INIT=False, STATE_ONLY=False, **common)
            return result()
        # 1) each segment's own final state and total decay; 2) scan them into the
        # state entering each segment (and the final state); 3) walk every segment
        # from its entering state, writing the outputs.
        states = torch.empty(bsz * h, ns, dk, dv, device=q.device, dtype=torch.float32)
        totals = torch.empty(bsz * h, ns, device=q.device, dtype=torch.float32) if decays else states
        launch(q, k, v, g, lam, out, states, states, totals, x, dots, *strides, h, n, dk, dv, seg, ns, float(scale),
               STORE_STATE=True, HAS_INIT=False, STATE_ONLY=True, **common)
        bks = 16
        _split_scan[(nvb, triton.cdiv(dk, bks), bsz * h)](
            states, totals, state, ns, dk, dv, BKS=bks, BV=bv, DECAYS=decays, STORE_STATE=bool(return_state),
            num_warps=1 if interpreting() else 2, num_stages=1,
        )
        launch(q, k, v, g, lam, out, states, states, totals, x, dots, *strides, h, n, dk, dv, seg, ns, float(scale),
               STORE_STATE=False, HAS_INIT=True, STATE_ONLY=False, **common)
        return result()

    key = ("linear", dk, dv, q.dtype, bool(reverse), row_dot is not None)
    return launch_fitting(key, config(dk, dv), smaller, run)


class LinearAttentionFn(torch.autograd.Function):
    """Autograd around ``chunk_forward``: gradients for q, k, v, the per-head
    log decay and the per-token log gate."""

    @staticmethod
    def forward(ctx, q, k, v, log_decay, gate, scale, path):
        out = chunk_forward(q, k, v, log_decay=log_decay, gate=gate, scale=scale, path=path)[0]
        ctx.save_for_backward(q, k, v, log_decay, gate)
        ctx.scale, ctx.path = scale, path
        return out

    @staticmethod
    def backward(ctx, do):
        q, k, v, log_decay, gate = ctx.saved_tensors
        kw = {"log_decay": log_decay, "gate": gate, "scale": ctx.scale, "path": ctx.path}
        decays = log_decay is not None or gate is not None
        do = do.to(q.dtype)
        # the decay gradient needs q . dq and k . dk per token: the kernel sums
        # them from its fp32 accumulators as it writes dq, dk
        dq, _, q_dq = chunk_forward(do, v, k, row_dot=q if decays else None, **kw)
        dk, _, k_dk = chunk_forward(v, do, q, reverse=True, row_dot=k if decays else None, **kw)
        dv = chunk_forward(k, q, do, reverse=True, **kw)[0]
        d_lam = d_gate = None
        if decays:
            dc = q_dq - k_dk  # dL/d cumsum(a), (B, H, N)
            da = dc.flip(-1).cumsum(-1).flip(-1)
            if gate is not None and ctx.needs_input_grad[4]:
                d_gate = da.to(gate.dtype)
            if log_decay is not None and ctx.needs_input_grad[3]:
                d_lam = da.sum((0, 2)).to(log_decay.dtype)
        return dq, dk, dv, d_lam, d_gate, None, None


def linear_attention(q, k, v, *, log_decay=None, gate=None, scale: float = 1.0, path: str = "auto") -> torch.Tensor:
    """Causal (decayed, gated) linear attention, differentiable; see ``reference``
    for the formula. q, k (B, H, N, Dk), v (B, H, N, Dv), log_decay (H,),
    gate (B, H, N) log forget gates (<= 0). ``path``: see ``chunk_forward``
    (which refuses an unknown one)."""
    check_inputs(q, k, v, log_decay, gate)
    return LinearAttentionFn.apply(q, k, v, log_decay, gate, float(scale), path)
