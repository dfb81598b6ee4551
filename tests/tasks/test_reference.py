"""Tasks by reference: NAME, package.module:Class, path/to/file.py:Class and
data:PATH resolve to tasks; the study record rebuilds the same task and refuses
changed data, naming what changed."""
from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from archgram.tasks import get_task
from archgram.tasks.reference import TaskReferenceError, import_file, rebuild, record, reference_of, resolve

USER_TASK = textwrap.dedent('''
    import torch
    from archgram.tasks.base import Task, TaskData
    from archgram.tasks.heads import ClassificationHead

    class Blobs(Task):
        name = "blobs"

        def __init__(self, n=40):
            super().__init__()
            self.n = n

        def generate(self, seed):
            x = torch.arange(self.n * 2, dtype=torch.float32).reshape(self.n, 1, 2)
            y = torch.arange(self.n) % 2
            return TaskData(x, y, None, None, x[:4], y[:4])

        def body_input_shape(self, b):
            return (b, 1, 2)

        def head(self, shape):
            return ClassificationHead(shape, 2)

    NOT_A_TASK = 3
''')


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_tasks.py").write_text(USER_TASK)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path / "my_tasks.py"


def test_module_and_file_references_build_the_class_with_options(user_module):
    by_module = resolve("my_tasks:Blobs", {"n": 30})
    by_file = resolve(f"{user_module}:Blobs", {"n": 30})
    assert type(by_module).__name__ == type(by_file).__name__ == "Blobs"
    assert by_module.data(0).n_train + by_module.data(0).n_val == 30
    assert reference_of(by_module) == "my_tasks:Blobs"
    assert reference_of(by_file) == f"{user_module}:Blobs"
    assert reference_of(get_task("digits")) == "digits"


@pytest.mark.parametrize("ref, message", [
    ("my_tasks:Nope", "defines no 'Nope'"),
    ("my_tasks:NOT_A_TASK", "is a int, not a Task subclass"),
    ("no_such_module_xyz:Blobs", "cannot import module 'no_such_module_xyz'"),
    ("missing_file.py:Blobs", "no such file missing_file.py"),
    ("digts", "did you mean 'digits'"),
])
def test_bad_references_are_one_line_errors(user_module, ref, message):
    with pytest.raises(Exception) as err:
        resolve(ref)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_file_that_fails_to_import_is_named_and_left_unregistered(tmp_path):
    broken = tmp_path / "broken_tasks.py"
    broken.write_text("import sys\nFIRST = 1\nraise RuntimeError('boom')\n")
    before = set(sys.modules)
    with pytest.raises(TaskReferenceError, match=r"importing .*broken_tasks.py failed: RuntimeError: boom"):
        resolve(f"{broken}:Blobs")
    assert set(sys.modules) == before


def test_import_file_keeps_the_module_registered_only_when_asked(tmp_path):
    source = tmp_path / "plain.py"
    source.write_text("import sys\nSEEN_AS = __name__\nREGISTERED = __name__ in sys.modules\n")
    try:
        kept = import_file(source, "archgram_test_kept")
        assert (kept.SEEN_AS, kept.REGISTERED) == ("archgram_test_kept", True)
        assert sys.modules["archgram_test_kept"] is kept
        dropped = import_file(source, "archgram_test_dropped", keep=False)
        assert dropped.REGISTERED and "archgram_test_dropped" not in sys.modules
    finally:
        sys.modules.pop("archgram_test_kept", None)


def test_bad_options_are_refused(user_module):
    with pytest.raises(TaskReferenceError, match="cannot build it with options"):
        resolve("my_tasks:Blobs", {"size": 3})


def test_a_data_file_rebuilds_and_a_changed_file_is_refused_by_name(tmp_path):
    path = tmp_path / "d.npz"
    x = np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32)
    np.savez(path, x=x, y=np.arange(30) % 2)
    task = resolve(f"data:{path}")
    meta = {"task": task.name, "task_ref": record(task, reference_of(task), {})}
    assert meta["task_ref"]["ref"] == f"data:{path}"
    again = rebuild(meta)
    assert np.array_equal(again.arrays["x_train"], task.arrays["x_train"])
    np.savez(path, x=x, y=(np.arange(30) + 1) % 2)
    with pytest.raises(TaskReferenceError) as err:
        rebuild(meta, what="export")
    text = str(err.value)
    assert text.startswith("export: the data of data:") and "y contents" in text and "x " not in text.split("(")[1]


def test_a_task_from_python_needs_the_task_again_and_must_match(tmp_path):
    from archgram.tasks.data import from_arrays

    x, y = np.arange(40.0).reshape(20, 2), np.arange(20) % 2
    task = from_arrays(x, y)
    meta = {"task": task.name, "task_ref": record(task, reference_of(task), {})}
    with pytest.raises(TaskReferenceError, match="given from Python"):
        rebuild(meta)
    assert rebuild(meta, from_arrays(x, y)) is not None
    with pytest.raises(TaskReferenceError, match="x contents"):
        rebuild(meta, from_arrays(x + 1, y))
