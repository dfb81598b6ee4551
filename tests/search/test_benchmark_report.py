"""The search-quality benchmark's report (experiments/search_quality/run.py):
the verdicts it prints are the ones issue 16's targets are read from."""
import importlib.util
import json
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[2] / "experiments" / "search_quality" / "run.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("search_quality_run", RUN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(method: str, seed: int, best: float, cpu: float = 60.0) -> dict:
    trials = [{"spent": 100, "best": best / 2}, {"spent": 200, "best": best}]
    return {"task": "sort", "method": method, "seed": seed, "total": 200, "best": best, "test": best,
            "seconds": cpu, "cpu_seconds": cpu, "trials": trials}


def test_paired_wins_counts_seeds_both_ran(bench):
    assert bench.paired_wins({0: 0.5, 1: 0.9, 2: 0.7}, {0: 0.6, 1: 0.9, 3: 0.1}) == (1, 2)


def test_report_flags_a_strategy_below_random_on_its_mean(bench, tmp_path):
    runs = ([_run("random", s, b) for s, b in enumerate([0.6, 0.6, 0.6])]
            + [_run("tpe", s, b) for s, b in enumerate([0.7, 0.5, 0.7])]          # mean 0.633: at least random
            + [_run("evolution", s, b) for s, b in enumerate([0.9, 0.1, 0.1])]   # wins one seed, mean 0.367
            + [_run("evolution+sh", s, b, cpu=120.0) for s, b in enumerate([0.6, 0.6, 0.6])])
    summary = bench.report(runs, {}, tmp_path)
    methods = summary["tasks"]["sort"]["methods"]
    assert methods["tpe"]["at_least_random"] and methods["tpe"]["paired"] == (2, 3)
    assert not methods["evolution"]["at_least_random"] and methods["evolution"]["paired"] == (1, 3)
    assert methods["evolution+sh"]["cpu_minutes"] == pytest.approx(2.0)
    table = (tmp_path / "table.md").read_text()
    assert "| sort | **no** | **no** | evolution |" in table
    assert json.loads((tmp_path / "results.json").read_text())["tasks"]["sort"]["grid"][-1] == 200


def test_report_of_an_empty_folder_says_what_to_do(bench, tmp_path):
    with pytest.raises(SystemExit, match="no benchmark runs"):
        bench.report_existing(tmp_path)
