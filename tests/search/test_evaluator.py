"""Evaluator: trains and scores under a budget, is deterministic under a seed, and
turns every model problem into a failed TrialResult instead of an exception."""
from __future__ import annotations

import json
import random
import signal
import time

import pytest
import torch

from archgram.errors import ArchgramError
from archgram.grammar.edit import cost
from archgram.grammar.model import Grammar
from archgram.search import Budget, TrialResult, evaluate
from archgram.search.evaluator import build_model, classify
from archgram.search.training.options import TrainOptions
from archgram.tasks import get_task

B = 32
# One rule, so the derivation is fixed. Pixels are first gathered into one 64-wide
# token (im2col over the whole 8x8 image): a per-pixel MLP followed by the pooling
# head would only see the intensity histogram.
MLP = "net : im2col(k=8, s=8, p=0) linear(out=32) relu linear(out=32)\n"
FAST = {"threads": 1}




@pytest.fixture(scope="module")
def digits():
    task = get_task("digits")
    task.data(0)
    return task


def derive(text: str, task, batch: int = B):
    return Grammar.from_text(text).sample(task.body_input_shape(batch), seed=0, target=task.output_target(batch))


@pytest.fixture(scope="module")
def mlp(digits):
    return derive(MLP, digits)


# ----------------------------------------------------------------- budget
@pytest.mark.parametrize(
    "text, expected",
    [
        ("60s", Budget(seconds=60)),
        ("500steps", Budget(steps=500)),
        ("200", Budget(steps=200)),
        (200, Budget(steps=200)),
        ("2epochs", Budget(epochs=2)),
        ("0.5epoch", Budget(epochs=0.5)),
        ("2min", Budget(seconds=120)),
        ("1e3steps", Budget(steps=1000)),
        (" 1000 steps, 30s ", Budget(steps=1000, seconds=30)),
        ("1.5s", Budget(seconds=1.5)),
    ],
)
def test_budget_parse(text, expected):
    assert Budget.parse(text) == expected
    assert Budget.parse(str(expected)) == expected  # round trip


@pytest.mark.parametrize("text", ["", "fast", "10parsecs", "-5s", "0steps", "1.5steps", "10s,20s", "steps", 1.5, True])
def test_budget_parse_errors(text):
    with pytest.raises(ArchgramError):
        Budget.parse(text)


def test_budget_total_steps():
    assert Budget(epochs=2).total_steps(44) == 88
    assert Budget(steps=50, epochs=2).total_steps(44) == 50
    assert Budget(seconds=5).total_steps(44) is None


def test_train_options_are_checked():
    with pytest.raises(ArchgramError, match="unknown train option"):
        TrainOptions.from_dict({"warmpu": 0.1})
    with pytest.raises(ArchgramError):
        TrainOptions.from_dict({"schedule": "linear"})
    opts = TrainOptions.from_dict({"warmup": 0.1})
    assert opts.factor(0.0) < 0.05 and opts.factor(0.1) == pytest.approx(1.0) and opts.factor(1.0) == pytest.approx(0.0)


# ---------------------------------------------------------------- training
def test_digits_trains_above_chance(digits, mlp):
    seen = []
    r = evaluate(mlp, digits, "50steps", seed=0, lr=3e-3, train_options=FAST, on_step=lambda s, loss: seen.append((s, loss)))
    assert r.ok, r.message
    assert r.failure is None and r.metric == "accuracy" and r.steps == 50
    assert r.score > 0.4  # chance is 0.1
    assert [s for s, _ in seen] == list(range(1, 51))
    model, typed, flops = build_model(mlp, digits, B)
    assert r.params == sum(p.numel() for p in model.parameters())
    assert r.flops == flops > cost(typed.root)[2] > 0  # body plus head
    assert r.latency_ms > 0 and r.train_seconds > 0 and r.epochs == pytest.approx(50 / (1222 // B))  # 1438 train+val, 216 carved for validation
    assert r.val_loss is not None and r.train_loss is not None
    json.dumps(r.to_dict())
    assert TrialResult.from_dict(r.to_dict()) == r


def test_same_seed_same_score_and_rng_untouched(digits, mlp):
    torch.manual_seed(123)
    random.seed(7)
    before = (torch.get_rng_state(), random.getstate())
    a = evaluate(mlp, digits, "20steps", seed=3, train_options=FAST)
    b = evaluate(mlp, digits, "20steps", seed=3, train_options=FAST)
    c = evaluate(mlp, digits, "20steps", seed=4, train_options=FAST)
    assert a.ok and b.ok and c.ok
    assert a.score == b.score and a.train_loss == b.train_loss and a.val_loss == b.val_loss
    assert (c.train_loss, c.val_loss) != (a.train_loss, a.val_loss)
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]


def test_epoch_and_seconds_budgets(digits, mlp):
    r = evaluate(mlp, digits, "0.5epochs", train_options=FAST)
    assert r.ok and r.steps == 19  # 1222 // 32 = 38 steps an epoch
    r = evaluate(mlp, digits, "0.3s", train_options=FAST)
    assert r.ok and r.steps >= 1 and 0.25 <= r.train_seconds < 2


def test_on_step_can_stop_early(digits, mlp):
    r = evaluate(mlp, digits, "1000steps", train_options=FAST, on_step=lambda step, loss: step >= 5)
    assert r.ok and r.steps == 5 and r.extras.get("stopped_early")


def test_every_task_runs(digits):
    for name in ("mqar", "icl-regression", "sort"):
        task = get_task(name)
        d = derive("net : linear(out=16) relu linear(out=16)\n", task, 16)
        r = evaluate(d, task, "5steps", train_options=FAST)
        assert r.ok, (name, r.message)
        assert r.metric == task.metric_name and r.score is not None


# ---------------------------------------------------------------- failures
def test_nan_loss_is_a_failure(digits):
    d = derive("net : im2col(k=8, s=8, p=0) linear(out=16) scale(value=1e30) scale(value=1e30) linear(out=16)\n", digits)
    r = evaluate(d, digits, "20steps", train_options=FAST)
    assert not r.ok and r.failure == "nan" and r.score is None
    assert "step 0" in r.message and r.params is not None


def test_derivation_for_another_shape_is_a_shape_failure(digits, mlp):
    sort = get_task("sort")
    r = evaluate(mlp, sort, "5steps", train_options=FAST)  # im2col unfolds sort's 10 positions as one 8-window
    assert r.failure == "shape" and "sort" in r.message and "(32,10,*)" in r.message
    wide = derive("net : im2col(k=16, s=16, p=0) linear(out=16)\n", get_task("mnist1d"))
    r = evaluate(wide, sort, "5steps", train_options=FAST)  # 16-wide windows on sort's 10 positions
    assert r.failure == "shape" and "im2col" in r.message and "sequence of length 10" in r.message
    icl = get_task("icl-regression")
    d = Grammar.from_text("net : permute(order=(0,2,1)) linear(out=8)\n").sample(icl.body_input_shape(B), seed=0)
    r = evaluate(d, sort, "5steps", train_options=FAST)  # type-checks, but gives (B, 1, 8): no pointer head fits
    assert r.failure == "shape" and "(32,10,*)" in r.message


def test_tiny_timeout(digits, mlp):
    r = evaluate(mlp, digits, "100000steps", timeout=0.2, train_options=FAST)
    assert r.failure == "timeout" and r.status == "failed"
    assert r.total_seconds < 3


@pytest.mark.skipif(not hasattr(signal, "SIGALRM"), reason="needs SIGALRM")
def test_timeout_interrupts_a_stuck_step(digits, mlp):
    if signal.getsignal(signal.SIGALRM) not in (signal.SIG_DFL, None):
        pytest.skip("SIGALRM is taken (e.g. by pytest-timeout); only the cooperative check applies")
    started = time.perf_counter()
    r = evaluate(mlp, digits, "10steps", timeout=0.5, train_options=FAST, on_step=lambda s, loss: time.sleep(30))
    assert r.failure == "timeout" and "interrupted" in r.message
    assert time.perf_counter() - started < 5
    assert signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None)


def test_seconds_budget_cap_leaves_room(digits, mlp):
    r = evaluate(mlp, digits, "0.2s", train_options=FAST, on_step=lambda s, loss: time.sleep(0.3) if s == 1 else None)
    assert r.ok  # one slow step: past the budget, well within 3x + 10 s


@pytest.mark.parametrize(
    "exc, kind",
    [
        (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "oom"),
        (RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: not enough memory: you tried... out of memory"), "oom"),
        (MemoryError(), "oom"),
        (ValueError("boom"), "error"),
    ],
)
def test_exceptions_become_failures(digits, mlp, exc, kind):
    def explode(step, loss):
        raise exc

    r = evaluate(mlp, digits, "5steps", train_options=FAST, on_step=explode)
    assert r.status == "failed" and r.failure == kind
    assert classify(exc) == kind
    if kind == "error":
        assert "ValueError: boom" in r.message and "test_evaluator.py" in r.message


def test_caller_mistakes_raise(digits, mlp):
    with pytest.raises(ArchgramError, match="unknown optimizer"):
        evaluate(mlp, digits, "5steps", optimizer="lion")
    with pytest.raises(ArchgramError, match="unknown task"):
        evaluate(mlp, "digitz", "5steps")
    with pytest.raises(ArchgramError):
        evaluate(mlp, digits, "five steps")
    with pytest.raises(ArchgramError, match="batch size"):
        evaluate(mlp, digits, "5steps", batch_size=100000)


def test_other_batch_size_and_optimizers(digits, mlp):
    for opt in ("adam", "sgd"):
        r = evaluate(mlp, digits, "5steps", batch_size=16, optimizer=opt, train_options={**FAST, "schedule": "constant"})
        assert r.ok and r.batch_size == 16


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda(digits, mlp):
    a = evaluate(mlp, digits, "50steps", device="cuda", lr=3e-3)
    assert a.ok and a.score > 0.4 and a.device.startswith("cuda")
