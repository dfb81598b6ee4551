"""archgram analyze (S69): head ablation, attention maps, distances, files, CLI."""
from __future__ import annotations

import json

import pytest
import torch

import archgram
from archgram.analysis.capture import AnalysisError, attention_layers, attention_map, capture
from archgram.analysis.distance import distance_matrix, row_distances, strength_by_distance
from archgram.ops.attention import op as attention_op

pytestmark = pytest.mark.catalog("S69")

SHAPE = (2, 64, 32)  # mqar's body input at batch 2
#: The analysed architectures, written out (not seeds of a shipped grammar, which move
#: whenever that grammar gains an alternative): attention layers inside pre-norm blocks.
ARCHS = {
    "softmax": (2, "attention(heads=4, kv_heads=1, score=softmax, pattern=neighborhood(9), position=gpsa)"),
    "linear": (4, "attention(heads=4, layout=random_qk, score=linear, pattern=causal)"),
    "combiner": (1, "attention(heads=4, score=softmax, pattern=combiner(8))"),
    "combiner_causal": (1, "attention(heads=4, score=softmax, pattern=combiner(8), causal=true)"),
}


def _derivation(arch: str, batch: int = 2):
    from archgram.grammar.model import Grammar
    from archgram.tasks import get_task

    layers, attention = ARCHS[arch]
    g = Grammar.from_text(f"net   : layer*{layers}\nlayer : mix ffn\nmix   : clone(2) mixer identity add\n"
                          f"mixer : layernorm {attention}\nffn   : clone(2) mlp identity add\n"
                          "mlp   : layernorm linear(out=64) gelu linear(out=32)\n")
    task = get_task("mqar")
    return g.sample(task.body_input_shape(batch), seed=0, target=task.output_target(batch))


def _model(arch: str):
    torch.manual_seed(0)
    return archgram.compile(_derivation(arch)).eval()


def test_head_mask_equals_zeroing_the_head_by_hand():
    """Masking head 1 of layer 0 through the capture equals zeroing that head's
    slice of the output projection's input with a plain forward pre-hook."""
    model = _model("softmax")
    (name, op), *_ = attention_layers(model)
    heads, d = op.layout.heads, op.layout.head_dim
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = model(x)
        mask = torch.ones(heads)
        mask[1] = 0
        with capture(model, maps=False, head_mask={name: mask}):
            ablated = model(x)

        def zero_head(module, args):
            (inp,) = args
            inp = inp.clone()
            inp[..., 1 * d:2 * d] = 0
            return (inp,)

        handle = op.layout.o.register_forward_pre_hook(zero_head)
        try:
            manual = model(x)
        finally:
            handle.remove()
        after = model(x)
    assert attention_op.ANALYSIS_HOOK is None
    assert torch.equal(ablated, manual)
    assert not torch.allclose(ablated, base)
    assert torch.equal(after, base)  # no capture: untouched


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_maps_reproduce_the_head_outputs(arch):
    """The captured map times v is the op's own head output (softmax weights, and
    the implied map of linear attention), rows of causal maps see no future."""
    model = _model(arch)
    checked = []

    def hook(op, out, q, k, v, mask, bias):
        w, how = attention_map(op, q, k, v, mask, bias)
        torch.testing.assert_close(w @ v, out, atol=1e-5, rtol=1e-5, msg=how)
        if op.causal or op.pattern.name == "causal":
            assert torch.all(w.triu(1) == 0)
        checked.append(how)
        return out

    attention_op.ANALYSIS_HOOK = hook
    try:
        with torch.no_grad():
            model(torch.randn(SHAPE))
    finally:
        attention_op.ANALYSIS_HOOK = None
    assert len(checked) == len(attention_layers(model))


def _first_layer_inputs(model, x) -> dict:
    """The first attention layer's analysis-hook arguments for one forward of ``x``."""
    seen = {}

    def hook(op, out, q, k, v, mask, bias):
        seen.setdefault("args", (op, out, q, k, v, mask, bias))
        return out

    attention_op.ANALYSIS_HOOK = hook
    try:
        with torch.no_grad():
            model(x)
    finally:
        attention_op.ANALYSIS_HOOK = None
    return seen["args"]


@pytest.mark.catalog("S27")
@pytest.mark.parametrize("arch", ["combiner", "combiner_causal"])
def test_combiner_map_is_its_factorised_attention_not_full_softmax(arch):
    """Combiner's map: direct weights inside a query's own block of 8, and for
    each other block the summary's weight spread by the local expectation
    q(j | block) -- constant across the block while that expectation is uniform
    (w = 0, as built), proportional to it once learned; equal to the softmax of
    the dense exact-bias logits (a second, independent form) and not the full
    softmax of the same q and k."""
    model = _model(arch)
    (_, layer), *_ = attention_layers(model)
    assert layer.factorised
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2))
    op, out, q, k, v, mask, bias = _first_layer_inputs(model, x)
    w, how = attention_map(op, q, k, v, mask, bias)
    assert "combiner" in how
    n, blk = q.shape[-2], 8
    blocks = torch.arange(n) // blk
    far = blocks[:, None] != blocks[None, :]
    if op.causal:
        far = far & (blocks[:, None] > blocks[None, :])
        assert torch.all(w.triu(1) == 0)
    spans = w.unflatten(-1, (n // blk, blk))  # (B, H, N, block r, key in r)
    flat = (spans - spans[..., :1]).abs().amax(-1)  # spread of each query's weights inside block r
    assert flat[..., far[:, ::blk]].max() < 1e-7  # summarised blocks: one weight per block
    full = torch.softmax(q @ k.transpose(-1, -2) * op.scale, -1)
    assert (w - full).abs().amax() > 1e-3
    with torch.no_grad():
        op.pattern_module.w.copy_(torch.randn(op.pattern_module.w.shape, generator=torch.Generator().manual_seed(3)))
    op, out, q, k, v, mask, bias = _first_layer_inputs(model, x)
    w, _ = attention_map(op, q, k, v, mask, bias)
    torch.testing.assert_close(w @ v, out, atol=1e-5, rtol=1e-5)
    logits = q @ k.transpose(-1, -2) * op.scale + op.pattern.bias_for(q, k, None)
    if op.causal:
        logits = logits.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
    torch.testing.assert_close(w, torch.softmax(logits, -1), atol=1e-6, rtol=1e-5)
    expectation = torch.softmax(torch.einsum("bhnd,hd->bhn", k, op.pattern_module.w).unflatten(-1, (n // blk, blk)), -1)
    spans = w.unflatten(-1, (n // blk, blk))  # within a summarised block, weights follow q(j | block)
    share = spans / spans.sum(-1, keepdim=True).clamp_min(1e-30)
    got = share[..., far[:, ::blk], :]
    want = expectation[:, :, None].expand_as(share)[..., far[:, ::blk], :]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_distances_hand_computed():
    d = distance_matrix(3, 3, None)
    assert d.tolist() == [[0, 1, 2], [1, 0, 1], [2, 1, 0]]
    w = torch.tensor([[[[1.0, 0, 0], [0.5, 0.5, 0], [0, 0, 0]]]])
    rows = row_distances(w, d)
    assert rows[0, 0, :2].tolist() == [0.0, 0.5] and torch.isnan(rows[0, 0, 2])  # an empty row is no data
    g = distance_matrix(4, 4, (2, 2))  # pixels (0,0) (0,1) (1,0) (1,1)
    assert g[0, 3].item() == pytest.approx(2 ** 0.5) and g[1, 2].item() == pytest.approx(2 ** 0.5) and g[0, 2].item() == 1
    n = 9  # uniform attention over a sequence: mean |i - j| = (n^2 - 1) / (3 n)
    uniform = torch.full((1, 1, n, n), 1.0 / n)
    assert row_distances(uniform, distance_matrix(n, n, None)).mean().item() == pytest.approx((n * n - 1) / (3 * n))
    assert distance_matrix(4, 2, None) is None


def test_strength_by_distance_hand_computed_and_bounded_by_a_local_heads_reach():
    """Attention strength against distance (the paper's per-head profile): on a
    hand case each query's weight lands in the bin of its key's distance; on a
    model whose heads see a neighbourhood of 9 tokens (a window of 9 keys, shifted
    inward at the sequence ends), every head puts all its softmax weight within
    distance 8, almost all within 4."""
    d = distance_matrix(3, 3, None)
    w = torch.tensor([[[[1.0, 0, 0], [0.5, 0.5, 0], [0.2, 0.2, 0.6]]]])
    got = strength_by_distance(w, d, bins=4)  # query 0: all at 0; 1: 0.5 at 1, 0.5 at 0; 2: 0.6 at 0, 0.2 at 1, 0.2 at 2
    torch.testing.assert_close(got, torch.tensor([[(1 + 0.5 + 0.6) / 3, (0.5 + 0.2) / 3, 0.2 / 3, 0.0]]))
    model = _model("softmax")
    with capture(model) as cap, torch.no_grad():
        model(torch.randn(SHAPE))
    profiles = cap.strength()
    assert set(profiles) == {n for n, _ in attention_layers(model)}
    for heads in profiles.values():
        for p in heads:
            assert sum(p) == pytest.approx(1.0, abs=1e-5) and sum(p[9:]) == pytest.approx(0.0, abs=1e-7)
            assert sum(p[:5]) > 0.9
            assert p[1] > 0 and p[4] > 0  # it does reach its whole window


def test_capture_collects_distances_and_refuses_bad_masks():
    model = _model("softmax")
    layers = attention_layers(model)
    with capture(model) as cap, torch.no_grad():
        model(torch.randn(SHAPE))
    dist = cap.mean_distance()
    assert set(dist) == {n for n, _ in layers}
    # neighborhood(9): no head looks further than 4 tokens on average
    assert all(0 < v <= 4 for heads in dist.values() for v in heads)
    assert cap.example[layers[0][0]].shape == (4, 64, 64)
    with pytest.raises(AnalysisError, match="2 heads|has 4 heads"):
        with capture(model, head_mask={layers[0][0]: torch.ones(2)}):
            pass
    with pytest.raises(AnalysisError, match="unknown attention layer"):
        with capture(model, head_mask={"nope": torch.ones(4)}):
            pass


def _run(args):
    from archgram.cli import run

    return run(args)


def test_analyze_cli_writes_report(tmp_path):
    """A derivation + task: trained a few steps, analysed, every file written."""
    src = tmp_path / "arch.json"
    src.write_text(_derivation("softmax", batch=8).to_json())
    out = tmp_path / "report"
    code = _run(["analyze", str(src), "--task", "mqar", "--budget", "3steps", "--max-val", "16", "--out", str(out)])
    assert code == 0
    for f in ("index.html", "explore.html", "analysis.json", "importance.png", "distance.png", "attention_L0.png", "attention_L1.png",
              "patterns_L0.png"):
        assert (out / f).stat().st_size > 0, f
    result = json.loads((out / "analysis.json").read_text())
    layer = result["layers"][0]
    assert len(layer["pattern_codes"]) == 4 * 64 and len(layer["strength_by_distance"]) == 4  # 4 heads x 64 queries
    assert [len(v) for v in result["importance"]["loss_delta"].values()] == [4, 4]
    assert result["val_examples"] == 16 and result["distance_unit"] == "tokens"
    html = (out / "index.html").read_text()
    assert "attention_L1.png" in html and "importance.png" in html and "explore.html" in html


def test_analyze_export_folder(tmp_path):
    """An export folder (derivation.json + weights.safetensors) is loaded, not retrained."""
    from safetensors.torch import save_file

    from archgram.analysis.source import load
    from archgram.search.evaluator import build_model
    from archgram.tasks import get_task

    d = _derivation("softmax", batch=8)
    torch.manual_seed(3)
    model = build_model(d, get_task("mqar"), 8)[0]
    (tmp_path / "derivation.json").write_text(d.to_json())
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "weights.safetensors"))
    loaded = load(str(tmp_path), task="mqar")
    for (k, a), b in zip(model.state_dict().items(), loaded.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(AnalysisError, match="--task"):
        load(str(tmp_path))


def test_model_without_attention_is_bad_input(tmp_path, capsys):
    from archgram.tasks import get_task

    task = get_task("mqar")
    g = archgram.load_grammar("mixers")
    for seed in range(40):
        d = g.sample(task.body_input_shape(8), seed=seed, target=task.output_target(8))
        if not attention_layers(archgram.compile(d)):
            break
    else:
        pytest.fail("no attention-free mixers sample")
    src = tmp_path / "mixer.json"
    src.write_text(d.to_json())
    code = _run(["analyze", str(src), "--task", "mqar", "--budget", "2steps", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "no attention layer" in err
    assert not (tmp_path / "o").exists()


def test_pattern_summary_separates_local_heads_from_sink_heads():
    """The paper's autoencoder summary of per-patch attention patterns: rows that
    attend locally and rows that dump their weight on the first token get codes
    that a nearest-centroid rule tells apart, and the autoencoder reconstructs
    the rows far better than their mean does."""
    from archgram.analysis.patterns import summarize

    n = 16
    g = torch.Generator().manual_seed(0)
    idx = torch.arange(n)
    local = torch.stack([torch.softmax(-((idx - i).abs().float()) + 0.3 * torch.randn(n, generator=g), 0) for i in range(n)])
    sink = torch.softmax(0.3 * torch.randn(n, n, generator=g), -1) * 0.2
    sink[:, 0] += 0.8
    rows = torch.cat([local, sink])
    codes, mse = summarize(rows)
    label = torch.cat([torch.zeros(n), torch.ones(n)]).bool()
    centre = torch.stack([codes[~label].mean(0), codes[label].mean(0)])
    nearest = (codes[:, None] - centre[None]).norm(dim=-1).argmin(-1).bool()
    assert (nearest == label).float().mean() >= 0.95
    scaled = rows / rows.abs().max()
    assert mse < 0.5 * (scaled - scaled.mean(0)).square().mean().item()
