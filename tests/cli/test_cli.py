"""The archgram command line: exit codes, JSON output, files written, and that no
failure a user can cause ever prints a traceback."""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import archgram
import archgram.compiler.check
from archgram import cli
from archgram.cli import grammar as grammar_cli
from archgram.grammar.derivation import Derivation

IMAGE = "8,3,32,32"


def invoke(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.run([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err or "--debug" in args
    return code, out, err


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------- help/version
def test_help_lists_commands(capsys):
    code, out, _ = invoke(capsys, "--help")
    assert code == 0
    for command in ("check", "sample", "ops"):
        assert command in out


def test_no_arguments_shows_help(capsys):
    code, out, _ = invoke(capsys)
    assert code == 0
    assert "Usage" in out


def test_command_help(capsys):
    code, out, _ = invoke(capsys, "sample", "--help")
    assert code == 0
    assert "--input-shape" in out and "--limit" in out


def test_version(capsys):
    code, out, _ = invoke(capsys, "--version")
    assert code == 0
    assert out.startswith(f"archgram {archgram.__version__}")


def test_version_in_a_fresh_process():
    proc = subprocess.run([sys.executable, "-m", "archgram.cli", "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("archgram ")


# -------------------------------------------------------------------- check
def test_check_einspace_json(capsys):
    code, out, _ = invoke(capsys, "check", "einspace", "--input-shape", IMAGE, "--n", "5", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["ok"] is True and data["exit_code"] == 0
    assert data["share"] == 1.0
    assert data["samples"]["share"] == {"sample": 1.0, "compile": 1.0, "run": 1.0}
    assert data["samples"]["n"] == 5 and data["samples"]["ran"] == 5
    assert data["failures"] == []
    assert data["grammar"]["name"] == "einspace"
    assert data["input_shape"] == [8, 3, 32, 32]
    assert data["lint"]["ok"] is True
    assert 0 <= data["lint"]["spectral_radius"] < 1
    assert "unreachable" in data["lint"] and "unproductive" in data["lint"]
    assert data["limits"]["nodes"] == archgram.load_grammar("einspace").limits.nodes
    rules = {r["name"]: r for r in data["rules"]}
    source = (Path(archgram.__file__).parent / "grammars" / "einspace.pcfg").read_text().splitlines()
    line = next(i for i, text in enumerate(source, 1) if text.startswith("module "))  # the rule's own line
    assert "module" in rules and rules["module"]["location"].endswith(f":{line}:1")
    assert abs(sum(p["prob"] for p in rules["module"]["productions"]) - 1) < 1e-9
    assert 0 <= data["samples"]["rejection_rate"] < 1
    assert data["samples"]["samples_per_s"] > 0


def test_check_einspace_report(capsys):
    code, out, _ = invoke(capsys, "check", "einspace", "-i", IMAGE, "-n", "3")
    assert code == 0
    for text in ("rules", "module", "spectral radius", "limits", "rejection rate", "samples/s", "ok"):
        assert text in out


def test_check_lint_error_exits_1(capsys, tmp_path):
    # 'loop' can never finish: a lint error, though 'net' still samples.
    path = write(tmp_path, "lint.pcfg", "start net\nnet : linear(out=8) | loop\nloop : loop linear(out=4)\n")
    code, out, _ = invoke(capsys, "check", path, "-i", IMAGE, "-n", "2", "--json")
    assert code == 1
    data = json.loads(out)
    assert data["lint"]["unproductive"] == ["loop"]
    assert data["share"] == 1.0 and data["ok"] is False


def test_check_compile_failure_exits_1(capsys, monkeypatch):
    def broken(d, *args, **kwargs):
        raise archgram.CompileError("no module for you")

    monkeypatch.setattr(archgram.compiler.check, "compile", broken)
    code, out, _ = invoke(capsys, "check", "einspace", "-i", IMAGE, "-n", "2", "--json")
    assert code == 1
    data = json.loads(out)
    assert data["samples"]["share"]["sample"] == 1.0 and data["share"] == 0.0
    assert {f["stage"] for f in data["failures"]} == {"compile"}
    assert "no module for you" in data["failures"][0]["error"]


def test_malformed_grammar_points_at_file_line_col(capsys, tmp_path):
    path = write(tmp_path, "bad.pcfg", "start net\nnet : linear(out=8 | identity\n")
    code, out, err = invoke(capsys, "check", path, "-i", IMAGE, "-n", "1")
    assert code == 2
    assert re.search(rf"{re.escape(str(path))}:2:\d+: error: ", err)
    assert "^" in err  # the excerpt with a caret
    assert out == ""


def test_unknown_op(capsys, tmp_path):
    path = write(tmp_path, "unknown.pcfg", "start net\nnet : lineer(out=8)\n")
    code, _, err = invoke(capsys, "check", path, "-i", IMAGE)
    assert code == 2
    assert f"{path}:2:7" in err
    assert "did you mean 'linear'" in err


def test_missing_grammar(capsys, tmp_path):
    code, _, err = invoke(capsys, "check", tmp_path / "nope.pcfg", "-i", IMAGE)
    assert code == 2
    assert err.startswith("error: ") and "not found" in err and "einspace" in err


@pytest.mark.parametrize("command", ["check", "sample"])
def test_input_shape_no_production_accepts(capsys, tmp_path, command):
    path = write(tmp_path, "image_only.pcfg", "start net\nnet : conv2d(out=8, k=3)\n")
    code, _, err = invoke(capsys, command, path, "-i", "8,16,32", "-n", "50")
    assert code == 2
    assert "error: no architecture of 'image_only' could be sampled for input shape (8,16,32)" in err
    assert "conv2d" in err
    assert ("tried the first 5 seeds" in err) or ("tried 5 seeds" in err)  # gave up early, not after 50


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-i", "8,a"], "not a comma-separated list of integers"),
        (["-i", "8,3"], "B,C,H,W"),
        (["-i", IMAGE, "--limit", "foo=3"], "unknown limit 'foo'"),
        (["-i", IMAGE, "--limit", "param=3"], "did you mean 'params'"),
        (["-i", IMAGE, "--limit", "depth=abc"], "is not a number"),
        (["-i", IMAGE, "--limit", "depth"], "expected KEY=VALUE"),
        (["-i", IMAGE, "--limit", "nodes=-4"], "must be positive"),
        (["-i", IMAGE, "--n", "-1"], "--n"),
        ([], "--input-shape"),
        (["-i", IMAGE, "--device", "floppy"], "not a torch device"),
    ],
)
def test_bad_arguments_give_one_error_line(capsys, args, message):
    code, out, err = invoke(capsys, "check", "einspace", *args)
    assert code == 2
    assert err.startswith("error: ")
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert out == ""


def test_unknown_command(capsys):
    code, _, err = invoke(capsys, "frobnicate")
    assert code == 2
    assert err.startswith("error: ") and "frobnicate" in err


def test_internal_error_hides_traceback_unless_debug(capsys, monkeypatch):
    def boom(name):
        raise RuntimeError("boom")

    monkeypatch.setattr(grammar_cli, "open_grammar", boom)
    code, _, err = invoke(capsys, "check", "einspace", "-i", IMAGE)
    assert code == 3
    assert err.strip() == "internal error: RuntimeError: boom (rerun with --debug for the traceback)"
    code, _, err = invoke(capsys, "--debug", "check", "einspace", "-i", IMAGE)
    assert code == 3
    assert "Traceback" in err and "RuntimeError: boom" in err


# ------------------------------------------------------------------- sample
def _sample_files(out: Path) -> list[Path]:
    return sorted(p for p in out.glob("*.json") if p.name != "summary.json")


def test_sample_writes_round_trippable_json(capsys, tmp_path):
    out = tmp_path / "samples"
    code, stdout, _ = invoke(capsys, "sample", "einspace", "-i", IMAGE, "--n", "4", "--seed", "0", "--out", out)
    assert code == 0
    files = _sample_files(out)
    assert len(files) == 4
    summary = json.loads((out / "summary.json").read_text())
    assert [s["file"] for s in summary["samples"]] == [f.name for f in files]
    for i, f in enumerate(files):
        index, digest = re.fullmatch(r"(\d{3})_([0-9a-f]{16})\.json", f.name).groups()
        assert int(index) == i
        d = Derivation.from_json(f.read_text())
        assert d.hash() == digest
        assert summary["samples"][i]["hash"] == digest
        assert tuple(d.input_shape) == (8, 3, 32, 32)
        assert list(d.output_shape) == summary["samples"][i]["output_shape"]
    # the table names every sample
    for f in files:
        assert f.name[4:20] in stdout


def test_sample_is_reproducible_and_seed_offset(capsys, tmp_path):
    code, out, _ = invoke(capsys, "sample", "einspace", "-i", IMAGE, "-n", "3", "--seed", "5", "--json")
    assert code == 0
    first = [s["hash"] for s in json.loads(out)["samples"]]
    code, out, _ = invoke(capsys, "sample", "einspace", "-i", IMAGE, "-n", "1", "--seed", "7", "--json")
    assert code == 0
    assert json.loads(out)["samples"][0]["hash"] == first[2]
    g = archgram.load_grammar("einspace")
    assert g.sample((8, 3, 32, 32), seed=6).hash() == first[1]


def test_sample_show_prints_trees(capsys):
    code, out, _ = invoke(capsys, "sample", "einspace", "-i", IMAGE, "-n", "2", "--show")
    assert code == 0
    assert out.count("<network>") == 2
    assert "└─" in out


def test_sample_dot_without_graphviz(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    out = tmp_path / "s"
    code, _, err = invoke(capsys, "sample", "einspace", "-i", IMAGE, "-n", "2", "--out", out, "--dot")
    assert code == 0
    dots = sorted(out.glob("*.dot"))
    assert len(dots) == 2
    assert all(p.read_text().startswith("digraph") for p in dots)
    assert [p.stem for p in dots] == [p.stem for p in _sample_files(out)]
    assert not list(out.glob("*.png"))
    assert "dot -Tpng" in err


@pytest.mark.skipif(sys.platform == "win32", reason="shell script stand-in for graphviz")
def test_sample_dot_renders_png_when_dot_is_installed(capsys, tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "dot"
    fake.write_text('#!/bin/sh\n# dot -Tpng IN -o OUT\ncp "$2" "$4"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    out = tmp_path / "s"
    code, _, err = invoke(capsys, "sample", "einspace", "-i", IMAGE, "-n", "2", "--out", out, "--dot")
    assert code == 0, err
    pngs = sorted(out.glob("*.png"))
    assert [p.stem for p in pngs] == [p.stem for p in sorted(out.glob("*.dot"))]
    summary = json.loads((out / "summary.json").read_text())
    assert all("png" in s for s in summary["samples"])


def test_sample_dot_needs_out(capsys):
    code, _, err = invoke(capsys, "sample", "einspace", "-i", IMAGE, "-n", "1", "--dot")
    assert code == 2 and "--out" in err


def test_sample_refuses_to_clobber_a_run(capsys, tmp_path):
    out = tmp_path / "s"
    assert invoke(capsys, "sample", "einspace", "-i", IMAGE, "-n", "3", "-o", out)[0] == 0
    code, _, err = invoke(capsys, "sample", "einspace", "-i", IMAGE, "-n", "2", "-o", out)
    assert code == 2 and "--overwrite" in err
    assert len(_sample_files(out)) == 3  # nothing lost
    code, _, _ = invoke(capsys, "sample", "einspace", "-i", IMAGE, "-n", "2", "--seed", "9", "-o", out, "--overwrite")
    assert code == 0
    assert len(_sample_files(out)) == 2  # the old run's files are gone, not mixed in


def test_sample_without_out_writes_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = invoke(capsys, "sample", "einspace", "-i", IMAGE, "-n", "2")
    assert code == 0
    assert "hash" in out and "FLOPs" in out
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------- limits
def test_limit_override_takes_effect(capsys):
    code, out, _ = invoke(capsys, "sample", "einspace", "-i", IMAGE, "-n", "6", "--json",
                          "--limit", "nodes=4", "--limit", "params=2k")
    assert code == 0
    data = json.loads(out)
    assert data["limits"]["nodes"] == 4 and data["limits"]["params"] == 2000
    assert data["limit_overrides"] == {"nodes": 4, "params": 2000.0}
    assert data["samples"] and all(s["nodes"] <= 4 and s["params"] <= 2000 for s in data["samples"])

    code, out, _ = invoke(capsys, "check", "einspace", "-i", IMAGE, "-n", "2", "--json", "-l", "depth=5")
    assert code == 0
    assert json.loads(out)["limits"]["depth"] == 5


def test_limit_must_be_positive(capsys):
    code, _, err = invoke(capsys, "check", "einspace", "-i", IMAGE, "-l", "nodes=0")
    assert code == 2 and "must be positive" in err


# ----------------------------------------------------------------------- ops
def test_ops_json_lists_linear_with_args(capsys):
    code, out, _ = invoke(capsys, "ops", "--json")
    assert code == 0
    ops = {o["name"]: o for o in json.loads(out)}
    linear = ops["linear"]
    assert linear["kind"] == "unary" and linear["family"] == "primitives"
    args = {a["name"]: a for a in linear["args"]}
    assert args["out"]["type"] == "int" and args["out"]["required"] is True and args["out"]["low"] == 1
    assert args["bias"]["type"] == "bool" and args["bias"]["default"] is True
    assert "S57" in linear["refs"] and linear["doc"]
    assert {"clone", "add", "im2col"} <= set(ops)


def test_ops_table_and_filters(capsys):
    code, out, _ = invoke(capsys, "ops")
    assert code == 0 and "linear" in out and "out: int" in out
    code, out, _ = invoke(capsys, "ops", "--family", "primitives", "--json")
    assert code == 0 and all(o["family"] == "primitives" for o in json.loads(out))
    code, out, _ = invoke(capsys, "ops", "linear", "--json")
    assert code == 0 and [o["name"] for o in json.loads(out)] == ["linear"]


def test_ops_unknown_names(capsys):
    code, _, err = invoke(capsys, "ops", "lineer")
    assert code == 2 and "did you mean 'linear'" in err
    code, _, err = invoke(capsys, "ops", "--family", "nope")
    assert code == 2 and "primitives" in err
