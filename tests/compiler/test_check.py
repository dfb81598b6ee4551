"""The library behind ``archgram check`` and ``archgram sample``: what N samples
came to, per stage, reproducible seed by seed, and the give-up rule."""
from __future__ import annotations

import json

import pytest

import archgram
import archgram.compiler.check as check_module
from archgram.errors import CompileError

SMALL = "start net\nnet : linear(out=8) | linear(out=4) relu | identity\n"
SHAPE = (2, 5, 6)


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "small.pcfg"
    path.write_text(SMALL)
    return archgram.load_grammar(str(path))


def test_check_counts_every_stage_and_records_where_a_sample_failed(small, monkeypatch):
    real, calls = check_module.compile, []

    def every_second_fails(d, *args, **kwargs):
        calls.append(d)
        if len(calls) % 2 == 0:
            raise CompileError("every second one")
        return real(d, *args, **kwargs)

    monkeypatch.setattr(check_module, "compile", every_second_fails)
    report = archgram.check_grammar(small, SHAPE, n=6, seed=10)
    smp = report["samples"]
    assert (smp["sampled"], smp["compiled"], smp["ran"]) == (6, 3, 3)
    assert report["share"] == 0.5 and report["ok"] is False
    assert [(f["seed"], f["stage"]) for f in report["failures"]] == [(11, "compile"), (13, "compile"), (15, "compile")]
    json.dumps(report)  # JSON-ready as promised


def test_check_of_a_clean_grammar_is_ok(small):
    report = archgram.check_grammar(small, SHAPE, n=4, limits={"nodes": 3})
    assert report["ok"] and report["share"] == 1.0 and report["failures"] == []
    assert report["limits"]["nodes"] == 3 and report["limit_overrides"] == {"nodes": 3}


def test_sample_i_is_the_grammars_sample_from_seed_plus_i(small, tmp_path):
    summary = archgram.sample_grammar(small, SHAPE, n=5, seed=3, out=tmp_path / "s")
    assert [r["hash"] for r in summary["samples"]] == [small.sample(SHAPE, seed=3 + i).hash() for i in range(5)]
    written = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert [r["file"] for r in written["samples"]] == sorted(p.name for p in (tmp_path / "s").glob("0*.json"))


def test_both_give_up_early_when_the_shape_cannot_be_sampled(tmp_path):
    path = tmp_path / "image_only.pcfg"
    path.write_text("start net\nnet : conv2d(out=8, k=3)\n")
    g = archgram.load_grammar(str(path))
    report = archgram.check_grammar(g, SHAPE, n=50)
    assert report["samples"]["stopped_after"] == 5 and len(report["failures"]) == 5 and not report["ok"]
    summary = archgram.sample_grammar(g, SHAPE, n=50)
    assert summary["sampled"] == 0 and len(summary["failures"]) == 5


def test_unknown_limit_is_refused(small):
    with pytest.raises(archgram.ArchgramError, match="unknown limit 'nodez'; did you mean 'nodes'"):
        archgram.check_grammar(small, SHAPE, n=1, limits={"nodez": 3})
