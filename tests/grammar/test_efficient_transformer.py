"""The shipped efficient-transformer grammar (S36): attention type searched jointly with
depth, width, heads and FFN ratio; every sample compiles and runs on a sequence."""
from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import pytest
import torch

import archgram

pytestmark = pytest.mark.catalog("S36")
ROOT = Path(__file__).resolve().parents[2]
SHAPE = (2, 16, 8)


def _study():
    spec = importlib.util.spec_from_file_location("et_run", ROOT / "experiments/efficient_transformer/run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def samples():
    g = archgram.load_grammar("efficient_transformer")
    assert g.lint().ok
    return [g.sample(SHAPE, seed=s) for s in range(40)]


def test_samples_span_attention_types_depths_widths_heads_and_ffn_ratios(samples):
    study = _study()
    seen = Counter()
    for d in samples:
        info = study.describe(d)
        assert info["width"] in (32, 64, 96) and 1 <= info["depth"] <= 4
        assert all(info["width"] % h == 0 for h in info["heads"])
        assert info["ffn_ratio"] and set(info["ffn_ratio"]) <= {1, 2, 4}
        assert d.output_shape == (2, 16, info["width"])
        seen.update({("kind", study.attention_kind(d)), ("width", info["width"]), ("depth", info["depth"])})
        seen.update(("heads", h) for h in info["heads"])
        seen.update(("ratio", r) for r in info["ffn_ratio"])
    for axis, values in (("kind", ("softmax", "efficient", "hybrid")), ("width", (32, 64, 96)), ("depth", (1, 2, 3, 4)),
                         ("heads", (2, 4, 8)), ("ratio", (1, 2, 4))):
        assert all(seen[(axis, v)] for v in values), (axis, seen)


def test_attention_kind_follows_score_and_pattern():
    study = _study()
    dense = {"score": {"name": "softmax"}, "pattern": {"name": "causal"}}
    assert not study.is_efficient(dense)
    assert study.is_efficient(dense | {"pattern": {"name": "window", "k": 9}})
    assert study.is_efficient({"score": {"name": "lightning"}, "pattern": {"name": "full"}})


def test_every_sample_compiles_and_runs(samples):
    for d in samples[:8]:
        model = archgram.compile(d)
        y = model(torch.randn(SHAPE))
        assert y.shape == d.output_shape and torch.isfinite(y).all()


def test_study_script_runs_end_to_end(tmp_path):
    study = _study()
    assert study.main(["--trials", "2", "--budget", "2steps", "--seq-len", "16", "--kv-pairs", "2", "--vocab", "16",
                       "--long-len", "64", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "results.md").read_text()
    assert "| best " in text and (tmp_path / "results.json").exists()
