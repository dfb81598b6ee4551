"""`archgram bench` on the CPU at tiny sizes: the long-context suite (S14, S46:
every registered token mixer in one template over lengths and masks) and the
kernels suite, their outputs (markdown, PNG, JSON) and their input errors."""
import json

import pytest

from archgram.bench import report
from archgram.bench.base import BenchError, parse_lengths
from archgram.cli import run

TINY = ["--device", "cpu", "--dtype", "fp32", "--width", "32", "--heads", "2", "--quick"]


@pytest.fixture(scope="module")
def long_context(tmp_path_factory):
    out = tmp_path_factory.mktemp("lc")
    rc = run(["bench", "--suite", "long-context", "--lengths", "16,32", "--quadratic-cap", "16", "--out", str(out), *TINY])
    assert rc == 0
    return out, json.loads((out / "long_context.json").read_text())


@pytest.mark.catalog("S14", "S46")
def test_long_context_suite_runs_every_registered_mixer_in_one_template(long_context):
    from archgram.ops.attention import SCORES
    from archgram.ops.registry import all_ops

    out, data = long_context
    assert (out / "long_context.md").is_file() and (out / "long_context.png").stat().st_size > 1000
    rows = data["rows"]
    cases = {r["case"] for r in rows}
    # the registries, not a list in the bench, decide what runs
    assert {f"attention score={s}" for s in SCORES.names()} <= cases
    # every one-input mixer (a merge op such as contmix_guided has no place in a one-input template)
    assert {s.name for s in all_ops() if s.family == "mixers" and s.kind == "unary"} <= cases
    assert {r["mask"] for r in rows} == {"full", "causal"} and {r["n"] for r in rows} == {16, 32}
    env = data["environment"]
    assert env["device"] and env["torch"] and "bench" in data["command"] and data["refs"] == ["S14", "S46"]


@pytest.mark.catalog("S14", "S46")
def test_long_context_skips_with_reasons_and_caps_quadratic_mixers(long_context):
    _, data = long_context
    by = {(r["case"], r["mask"], r["n"]): r for r in data["rows"]}
    soft16, soft32 = by[("attention score=softmax", "causal", 16)], by[("attention score=softmax", "causal", 32)]
    assert soft16["status"] == "ok" and soft16["tflops"] == pytest.approx(soft16["flops"] / soft16["ms"] / 1e9)
    assert soft32["status"] == "skip" and "quadratic" in soft32["reason"]  # past --quadratic-cap 16
    assert by[("attention score=linear", "causal", 32)]["status"] == "ok"  # linear: no cap
    axial = by[("attention pattern=axial", "full", 16)]
    assert axial["status"] == "skip" and "image" in axial["reason"]
    assert "no causal form" in by[("poolformer", "causal", 16)]["reason"]
    assert by[("orchid", "causal", 16)]["status"] == "ok"  # its causal argument is used


def test_bench_reports_each_kernel_fallback_with_its_reason(long_context):
    """On the CPU every attention call runs PyTorch: the report says so, per
    kernel family and reason, with the number of calls."""
    out, data = long_context
    reasons = {(f["family"], f["reason"]): f["calls"] for f in data["fallbacks"]}
    assert reasons[("flash", "tensors on cpu; the kernels run on CUDA")] > 0
    assert reasons[("linear", "tensors on cpu; the kernels run on CUDA")] > 0
    md = (out / "long_context.md").read_text()
    assert "Kernel fallbacks" in md and "| flash | tensors on cpu; the kernels run on CUDA |" in md


def test_kernels_suite_on_cpu_times_sdpa_and_says_why_the_rest_is_skipped(tmp_path):
    rc = run(["bench", "--suite", "kernels", "--lengths", "64", "--out", str(tmp_path), *TINY])
    assert rc == 0
    data = json.loads((tmp_path / "kernels.json").read_text())
    by = {r["case"]: r for r in data["rows"]}
    assert by["sdpa-flash fwd"]["status"] == "ok" and by["sdpa decode"]["status"] == "ok"
    assert by["linear (ours) fwd"] == {**by["linear (ours) fwd"], "status": "skip", "reason": "needs CUDA"}
    md = (tmp_path / "kernels.md").read_text()
    assert "| split-KV decode (ours) |" in md and "skip: needs CUDA" in md


@pytest.mark.parametrize("args,message", [
    (["--suite", "speed"], "unknown suite 'speed'"),
    (["--lengths", "4q"], "'4q' is not a positive length"),
    (["--lengths", "0"], "not a positive length"),
    (["--dtype", "fp8"], "unknown dtype 'fp8'"),
    (["--masks", "sliding"], "unknown mask 'sliding'"),
])
def test_bench_bad_input_is_a_clear_error(tmp_path, capsys, args, message):
    assert run(["bench", "--out", str(tmp_path), "--device", "cpu", *args]) == 2
    assert message in capsys.readouterr().err


def test_parse_lengths_reads_k_suffixes_and_sorts():
    assert parse_lengths("16k, 1k,4K,512,1k") == [512, 1024, 4096, 16384]
    with pytest.raises(BenchError):
        parse_lengths("1m")


def test_report_table_has_a_row_per_case_and_mask_and_a_column_per_length():
    rows = [
        {"case": "a", "mask": "full", "n": 8, "batch": 1, "status": "ok", "ms": 2.0, "tflops": 0.5, "peak_mib": 3.0},
        {"case": "a", "mask": "full", "n": 16, "batch": 1, "status": "oom", "reason": "out of memory"},
        {"case": "b", "mask": "causal", "n": 16, "batch": 1, "status": "skip", "reason": "needs CUDA"},
    ]
    lines = report.table(rows).splitlines()
    assert lines[0] == "| case | mask | N=8 | N=16 |"
    assert lines[2] == "| a | full | 2.000 ms · 0.5 TF/s · 3 MiB | OOM |"
    assert lines[3] == "| b | causal | - | skip: needs CUDA |"
