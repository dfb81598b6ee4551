"""model.py generation across the shipped grammars: the generated classes plus
the vendored ops must rebuild each sampled network with the same state-dict
keys (mapped 1:1) and the same outputs."""
from __future__ import annotations

import shutil
import subprocess
import sys
import types

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import archgram
from archgram.compiler.modules import Network
from archgram.export import ExportError
from archgram.export.codegen import build_recorded, generate, literal, map_key
from archgram.export.exporter import model_source, sample_input
from archgram.grammar.tree import OpNode, walk
from archgram.search.evaluator import build_model
from archgram.tasks import get_task
from tests.export.conftest import run_fresh

BATCH = 4
#: (grammar, task, seeds): every shipped grammar on a task its ops can take
CASES = [
    ("einspace", "digits", range(0, 4)),
    ("mixers", "digits", range(0, 3)),
    ("vision", "digits", range(0, 3)),
    ("attention", "mqar", range(0, 3)),
    ("efficient_transformer", "mqar", range(0, 2)),
    ("operators", "darcy", range(0, 2)),
]
SLOW_CASES = [
    ("einspace", "digits", range(4, 30)),
    ("einspace", "mnist1d", range(0, 10)),
    ("mixers", "mnist1d", range(0, 15)),
    ("vision", "digits", range(3, 20)),
    ("attention", "mqar", range(3, 40)),
    ("efficient_transformer", "mqar", range(2, 15)),
    ("operators", "darcy", range(2, 12)),
]


def _import_source(source: str, name: str):
    module = types.ModuleType(name)
    sys.modules[name] = module  # dataclasses look their module up
    try:
        exec(compile(source, f"{name}.py", "exec"), module.__dict__)
    finally:
        sys.modules.pop(name, None)
    return module


def _check(grammar: str, task_name: str, seed: int):
    g, task = archgram.load_grammar(grammar), get_task(task_name)
    shape = task.body_input_shape(BATCH)
    try:
        d = g.sample(shape, seed=seed, target=task.output_target(BATCH))
    except archgram.ArchgramError:
        pytest.skip(f"{grammar} samples nothing for {task_name} at seed {seed}")
    model, records, traced = build_recorded(lambda: build_model(d, task, BATCH)[0])
    model.eval()
    gen = generate(model, records, traced, "test")
    x = sample_input(task, BATCH)
    source = model_source(gen, "test", x.shape, str(x.dtype).replace("torch.", ""))
    exported = _import_source(source, f"exported_{grammar}_{seed}").Model()
    state = {map_key(k, gen.keymap): v for k, v in model.state_dict().items()}
    assert set(state) == set(exported.state_dict())  # keys map 1:1
    exported.load_state_dict(state)
    exported.eval()
    with torch.no_grad():
        assert torch.equal(model(x), exported(x)), f"{grammar} seed {seed}: outputs differ"
    return source, gen, model, x


def _first_seed_using(grammar: str, task_name: str, op: str) -> int:
    """The first seed whose sample uses ``op`` (a grammar edit reshuffles which seed that is)."""
    g, task = archgram.load_grammar(grammar), get_task(task_name)
    shape = task.body_input_shape(BATCH)
    for seed in range(50):
        d = g.sample(shape, seed=seed, target=task.output_target(BATCH))
        if any(isinstance(n, OpNode) and n.op == op for n in walk(d.root)):
            return seed
    raise AssertionError(f"no sample of {grammar} in 50 seeds uses {op}")


@pytest.mark.parametrize("grammar,task,seed", [(g, t, s) for g, t, seeds in CASES for s in seeds])
def test_generated_model_equals_archgram(grammar, task, seed):
    _check(grammar, task, seed)


@pytest.mark.slow
@pytest.mark.parametrize("grammar,task,seed", [(g, t, s) for g, t, seeds in SLOW_CASES for s in seeds])
def test_generated_model_equals_archgram_many(grammar, task, seed):
    _check(grammar, task, seed)


def test_attention_export_runs_without_archgram(tmp_path):
    """Attention resolves its parts from registries at construction: the vendored
    registries must hold the parts this model uses, and the kernel dispatch must
    be stood in for, with archgram absent."""
    source, gen, model, x = _check("attention", "mqar", _first_seed_using("attention", "mqar", "attention"))
    assert "class NoKernels" in source and "LAYOUTS = PartRegistry" in source
    (tmp_path / "model.py").write_text(source)
    state = {map_key(k, gen.keymap): v.contiguous() for k, v in model.state_dict().items()}
    with torch.no_grad():
        y = model(x)
    save_file({**state, "__x": x, "__y": y}, str(tmp_path / "w.safetensors"))
    code = (
        "from safetensors.torch import load_file\nimport model as m\n"
        "w = load_file('w.safetensors'); x, y = w.pop('__x'), w.pop('__y')\n"
        "net = m.Model(); net.load_state_dict(w); net.eval()\n"
        "with torch.no_grad():\n    print((net(x) - y).abs().max().item())\n"
    )
    assert float(run_fresh(tmp_path, code)) == 0.0


def test_sequence_convolution_exports():
    """einspace's im2col -> ... -> col2im on a sequence (a 1D unfold) exports and
    gives archgram's outputs."""
    source, _, model, x = _check("einspace", "mnist1d", _first_seed_using("einspace", "mnist1d", "col2im"))
    assert "'grid1d'" in source and "class Im2Col" in source and "class Col2Im" in source


def test_generated_source_is_clean():
    """One class per block named from the grammar, readable forward, no archgram
    import, and pyflakes-clean (no undefined or unused names)."""
    source, gen, _, _ = _check("einspace", "digits", 0)
    assert "class Model(nn.Module)" in source and '@op("' in source
    assert "archgram.ops" not in source.split("# Vendored")[0]
    assert not [ln for ln in source.splitlines() if ln.lstrip().startswith(("import archgram", "from archgram"))]
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff not installed")
    proc = subprocess.run([ruff, "check", "--select", "F", "--stdin-filename", "model.py", "-"], input=source,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:]


def test_literal_writes_arguments_and_refuses_objects():
    assert literal((8, 1, 8, 8)) == "(8, 1, 8, 8)" and literal((3,)) == "(3,)"
    assert literal({"name": "window", "_0": 7}) == "{'name': 'window', '_0': 7}"
    assert literal(float("inf")) == "math.inf" and literal([1.5, None, True]) == "[1.5, None, True]"
    with pytest.raises(ExportError, match="cannot be written as Python source"):
        literal(torch.zeros(2))


def test_op_with_no_export_path_is_named():
    g = archgram.load_grammar("einspace")
    d = g.sample((4, 1, 8, 8), seed=0)

    def build():
        net = archgram.compile(d)
        net.head = nn.Linear(3, 3)  # not an archgram op, stem or head
        return net

    model, records, traced = build_recorded(build)
    assert isinstance(model, Network)
    with pytest.raises(ExportError, match="torch.nn.modules.linear.Linear has no export path"):
        generate(model, records, traced)
