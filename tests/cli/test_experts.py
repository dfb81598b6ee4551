"""`archgram experts` (S53): behaviour-specific experts of an exported MoE model,
found from two input sets, and the effect of switching them off, from the CLI."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from archgram.cli import run

pytestmark = pytest.mark.catalog("S53")


def _export(folder, grammar: str):
    from safetensors.torch import save_file

    from archgram.grammar.model import Grammar
    from archgram.search.evaluator import build_model
    from archgram.tasks import get_task

    task = get_task("mnist1d")
    d = Grammar.from_text(grammar).sample(task.body_input_shape(8), seed=0, target=task.output_target(8))
    torch.manual_seed(0)
    model = build_model(d, task, 8)[0]
    folder.mkdir()
    (folder / "derivation.json").write_text(d.to_json())
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "weights.safetensors"))
    return model


def test_experts_command_ranks_experts_of_an_export_and_reports_switching_them_off(tmp_path, capsys):
    from archgram.analysis.experts import distinctive_experts

    model = _export(tmp_path / "exp", "start net\nnet : linear(out=8) gelu moe(experts=4, k=2)\n")
    rng = np.random.default_rng(0)
    a, b = rng.normal(2, 1, (16, 40, 1)).astype("float32"), rng.normal(-2, 1, (16, 40, 1)).astype("float32")
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    args = ["experts", str(tmp_path / "exp"), "--task", "mnist1d", "--a", str(tmp_path / "a.npy"),
            "--b", str(tmp_path / "b.npy"), "--top", "4"]
    assert run([*args, "--switch-off", "1"]) == 0
    out = capsys.readouterr().out
    want = distinctive_experts(model.eval(), list(torch.from_numpy(a).split(8)), list(torch.from_numpy(b).split(8)))
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  network")]
    assert listed == [f"{d.layer}:{d.expert}" for d in want[:4]]
    assert f"tuned (off {want[0].layer}:{want[0].expert})" in out and "changed predictions" in out
    assert run([*args, "--disable", "nowhere:1"]) == 2
    assert "no MoE layer 'nowhere'" in capsys.readouterr().err


def test_experts_command_refuses_a_model_without_moe(tmp_path, capsys):
    _export(tmp_path / "dense", "start net\nnet : linear(out=8)\n")
    np.save(tmp_path / "a.npy", np.zeros((8, 40, 1), dtype="float32"))
    code = run(["experts", str(tmp_path / "dense"), "--task", "mnist1d", "--a", str(tmp_path / "a.npy"),
                "--b", str(tmp_path / "a.npy")])
    assert code == 2 and "no routed mixture-of-experts" in capsys.readouterr().err


def test_an_exported_model_keeps_grammar_tuning_and_is_tuned_through_the_python_api():
    """The export's model.py (vendored source, no archgram import needed) keeps the
    grammar's disable/force, and archgram.analysis.experts reads and retunes it."""
    import sys
    import types

    from archgram.analysis.experts import activation_rates, moe_layers, tune_experts
    from archgram.export.codegen import build_recorded, generate, map_key
    from archgram.export.exporter import model_source, sample_input
    from archgram.grammar.model import Grammar
    from archgram.search.evaluator import build_model
    from archgram.tasks import get_task

    task = get_task("mnist1d")
    d = Grammar.from_text("start net\nnet : linear(out=8) moe(experts=4, k=2, disable=(1), force=(2))\n").sample(
        task.body_input_shape(8), seed=0, target=task.output_target(8))
    model, records, traced = build_recorded(lambda: build_model(d, task, 8)[0])
    gen = generate(model, records, traced, "mote")
    x = sample_input(task, 8)
    module = types.ModuleType("exported_mote")
    sys.modules["exported_mote"] = module
    try:
        exec(compile(model_source(gen, "mote", x.shape, "float32"), "exported_mote.py", "exec"), module.__dict__)
        exported = module.Model()
    finally:
        sys.modules.pop("exported_mote", None)
    exported.load_state_dict({map_key(k, gen.keymap): v for k, v in model.state_dict().items()})
    (name, layer), = moe_layers(exported).items()
    assert "archgram" not in type(layer).__module__
    rates = activation_rates(exported, [x])[name]
    assert rates[1] == 0 and rates[2] == 1  # the grammar's tuning survived the export
    tune_experts(exported, disable=[(name, 0)], force=[(name, 1)])
    rates = activation_rates(exported, [x])[name]
    assert rates[0] == 0 and rates[1] == 1
