"""experiments/search_quality/mnist1d_target.py: its summary names no weights
file (each trial's file is scratch, deleted once the pick is scored on test)."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "experiments" / "search_quality" / "mnist1d_target.py"


def test_summary_rows_name_no_weights_and_the_weights_are_gone(tmp_path):
    """Run as its docstring says (a script: the trials' process pool pickles its functions)."""
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, str(SCRIPT), "--trials", "2", "--steps", "2", "--jobs", "1", "--batch", "50",
                    "--out", str(tmp_path)], check=True, env=env, cwd=ROOT, capture_output=True, timeout=600)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [r["trial"] for r in summary["rows"]] == [0, 1]
    assert all("weights" not in r and "derivation" not in r for r in summary["rows"])
    assert str(tmp_path) not in json.dumps(summary["rows"]) and "safetensors" not in json.dumps(summary)
    assert not list(tmp_path.glob("*.safetensors"))


def test_committed_summary_names_no_weights():
    summary = json.loads((SCRIPT.parent / "mnist1d_target" / "summary.json").read_text())
    assert summary["rows"] and all("weights" not in r for r in summary["rows"])
