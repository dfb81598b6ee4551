"""README "Extending archgram" is true: each example there (an op, an attention
score, a strategy, a task) is the code of one ``_example_*`` function here,
verbatim, and the tests below register it and use it the way the grammar or a
search does. Registrations are undone after each test (``registries``)."""
from __future__ import annotations

import importlib
import inspect
import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import archgram
from archgram.ops.attention.parts import SCORES
from archgram.ops.registry import OPS
from archgram.registry import import_submodules
from archgram.search.strategies import STRATEGIES
from archgram.tasks import TASKS

README = Path(__file__).resolve().parent.parent / "README.md"
SEQ = (4, 6, 8)


@pytest.fixture
def registries(monkeypatch):
    """Every registry an example adds to, restored after the test."""
    for registry in (OPS, SCORES, STRATEGIES, TASKS):
        registry.names()  # load the built-ins first
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))


@pytest.fixture
def new_module(monkeypatch, tmp_path, request):
    """``new_module(package, fn)``: the example ``fn``'s code as a new file of
    ``package`` (in a folder added to the package's path), then the package's
    modules imported the way its ``__init__`` imports them: the file alone,
    with no line elsewhere, registers the example."""
    def add(package: str, fn) -> None:
        pkg, module = importlib.import_module(package), fn.__name__.lstrip("_")
        (tmp_path / f"{module}.py").write_text(_body(fn))
        monkeypatch.setattr(pkg, "__path__", [*pkg.__path__, str(tmp_path)])
        request.addfinalizer(lambda: sys.modules.pop(f"{package}.{module}", None))
        assert module in import_submodules(package)

    return add


def _grammar(text: str):
    return archgram.Grammar.from_text(text)


# ------------------------------------------------------------------ an op
def _example_op():
    import torch

    from archgram.ops.registry import Arg, Op, check_rank, register_op

    @register_op("swish_beta", family="primitives", args={"beta": Arg(float, 1.0, low=0.0)})
    class SwishBeta(Op):
        """x * sigmoid(beta x) (Ramachandran et al. 2017); beta=1 is SiLU."""

        def __init__(self, shape, beta: float = 1.0):
            super().__init__()
            self.beta = beta

        @classmethod
        def output_shape(cls, shape, beta: float = 1.0):
            check_rank("swish_beta", shape, 3, 4)
            return shape

        @classmethod
        def count_params(cls, shape, /, beta: float = 1.0):
            return 0

        def forward(self, x):
            return x * torch.sigmoid(self.beta * x)


def test_a_new_op_module_is_a_grammar_terminal_that_computes_its_formula(registries, new_module):
    new_module("archgram.ops.primitives", _example_op)
    g = _grammar("start net\nnet : linear(out=5) swish_beta(beta=2.0)\n")
    d = g.sample(SEQ, seed=0)
    model = archgram.compile(d)
    x = torch.randn(SEQ)
    lin = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    z = lin(x)
    assert torch.allclose(model(x), z / (1 + torch.exp(-2.0 * z)), atol=1e-6)
    assert d.output_shape == (4, 6, 5)


# ----------------------------------------------------------- an attention score
def _example_score():
    import torch

    from archgram.ops.attention.parts import SCORES
    from archgram.ops.attention.scores import Score

    @SCORES.register
    class ReLULength(Score):
        """relu(q.k / sqrt(d)) / n: ReLU attention divided by the number of keys
        (Wortsman et al. 2023), no softmax."""

        name = "relu_length"

        def weights(self, logits, mask):
            w = torch.relu(logits)
            if mask is not None:
                w = w.masked_fill(~mask, 0.0)
            return w / logits.shape[-1]


def test_a_new_score_module_is_a_grammar_choice_and_weighs_by_its_formula(registries, new_module):
    new_module("archgram.ops.attention", _example_score)
    g = _grammar("start net\nnet : attention(heads=2, score=relu_length, pattern=full, position=none)\n")
    model = archgram.compile(g.sample(SEQ, seed=0))
    y = model(torch.randn(SEQ))
    assert y.shape == SEQ and torch.isfinite(y).all()
    score = next(m for m in model.modules() if type(m).__name__ == "ReLULength")
    logits = torch.tensor([[[[1.0, -2.0, 3.0, 0.5]]]])
    assert torch.allclose(score.weights(logits, None), torch.tensor([[[[0.25, 0.0, 0.75, 0.125]]]]))


def test_every_op_family_imports_every_module_in_it():
    """What lets ``new_module`` stand for a real file: each family package's
    ``__init__`` discovers its modules, so none is left unregistered."""
    import pkgutil

    import archgram.ops

    families = [info.name for info in pkgutil.iter_modules(archgram.ops.__path__) if info.ispkg]
    assert {"attention", "primitives", "vision"} <= set(families)
    for family in families:
        package = importlib.import_module(f"archgram.ops.{family}")
        for info in pkgutil.iter_modules(package.__path__):
            if not info.ispkg and not info.name.startswith("_"):
                assert f"{package.__name__}.{info.name}" in sys.modules, f"{family}/{info.name}.py is not imported"


# ------------------------------------------------------------- a strategy
def _example_strategy():
    from archgram.search.strategies.base import Proposal, Strategy, register_strategy

    @register_strategy
    class SmallestOfK(Strategy):
        """Draw k architectures, propose the one with the fewest parameters."""

        name = "smallest_of_k"
        k = 4

        def propose(self) -> Proposal:
            drawn = [self.sample() for _ in range(self.k)]
            return Proposal(min(drawn, key=lambda d: d.stats["params"]))


def test_a_new_strategy_module_is_found_by_name_and_proposes_by_its_rule(registries, new_module):
    new_module("archgram.search.strategies", _example_strategy)
    from archgram.search.strategies import get_strategy

    g = archgram.load_grammar("einspace")
    shape = (2, 3, 8, 8)
    mine = get_strategy("smallest_of_k")(g, shape, seed=7)
    plain = get_strategy("random")(g, shape, seed=7)  # the same draws, one per proposal
    drawn = [plain.propose().derivation for _ in range(4)]
    want = min(drawn, key=lambda d: d.stats["params"])
    assert mine.ask().derivation.hash() == want.hash()
    assert len({d.stats["params"] for d in drawn}) > 1  # the rule had a choice to make


# ---------------------------------------------------------------- a task
def _example_task():
    import torch
    import torch.nn.functional as F
    from torch import nn

    from archgram.tasks.base import Recipe, Task, TaskData, accuracy, register_task

    @register_task
    class SumSign(Task):
        """Is the sum of a sequence of 8 numbers positive? Two classes."""

        name = "sum-sign"
        recipe = Recipe(lr=3e-3, batch_size=16, budget="50steps")

        def generate(self, seed: int) -> TaskData:
            g = torch.Generator().manual_seed(seed)
            x = torch.randn(600, 8, 1, generator=g)
            y = (x.sum(dim=(1, 2)) > 0).long()
            return TaskData(x[:500], y[:500], None, None, x[500:], y[500:])

        def body_input_shape(self, batch_size: int):
            return (batch_size, 8, 1)

        def head(self, body_output_shape):
            _, n, d = body_output_shape
            return nn.Sequential(nn.Flatten(1), nn.Linear(n * d, 2))

        def loss(self, pred, y):
            return F.cross_entropy(pred, y)

        def metric(self, pred, y) -> float:
            return accuracy(pred, y)


def test_a_new_task_module_builds_a_sampled_network_and_scores_it(registries, new_module):
    new_module("archgram.tasks", _example_task)
    from archgram.search.evaluator import build_model
    from archgram.tasks import get_task

    task = get_task("sum-sign")
    data = task.data(seed=0)
    assert torch.equal(data.y_test, (data.x_test.sum(dim=(1, 2)) > 0).long())  # labels as the docstring says
    assert data.n_val == 50  # validation carved from train (val_fraction 0.1)
    d = _grammar("start net\nnet : linear(out=8) relu\n").sample(task.body_input_shape(16), seed=0)
    model, _, _ = build_model(d, task, 16)  # stem -> body -> head, as every trial runs
    pred = model(data.x_test[:16])
    assert pred.shape == (16, 2)
    assert task.loss(pred, data.y_test[:16]).item() > 0
    assert task.metric(pred, data.y_test[:16]) == (pred.argmax(-1) == data.y_test[:16]).float().mean().item()


@pytest.mark.slow
def test_a_new_task_trains_through_the_evaluator(registries):
    """What a search trial does with the task: train under a budget, score on validation."""
    _example_task()
    from archgram.search.evaluator import evaluate

    d = _grammar("start net\nnet : linear(out=8) relu\n").sample((16, 8, 1), seed=0)
    result = evaluate(d, "sum-sign", "200steps", lr=3e-3)
    assert result.status == "ok", (result.failure, result.message)
    assert result.score > 0.8  # the sign of a sum is a linear function: easy to learn


# ----------------------------------------------------------------- the docs
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def _readme_blocks() -> list[str]:
    text = README.read_text()
    start = text.index("## Extending archgram")
    end = text.find("\n## ", start + 1)
    return FENCE.findall(text[start: end if end > 0 else None])


def _body(fn) -> str:
    lines = inspect.getsource(fn).splitlines(keepends=True)[1:]  # drop the def line
    return textwrap.dedent("".join(lines))


def test_readme_examples_are_the_tested_code():
    examples = [_example_op, _example_score, _example_strategy, _example_task]
    blocks = _readme_blocks()
    assert len(blocks) == len(examples)
    for block, fn in zip(blocks, examples, strict=True):
        assert block.strip() in _body(fn), f"README block differs from {fn.__name__}"
