"""Tasks: deterministic offline data with the declared shapes, stems and heads that
fit, targets that are right by construction, and a registry with clear errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from archgram.errors import ArchgramError, ShapeError
from archgram.grammar.model import Grammar
from archgram.tasks import Task, TaskData, all_tasks, get_task, register_task, task_names
from archgram.tasks.heads import ClassificationHead
from archgram.tasks.mqar import IGNORE, generate_mqar

B = 8
FAST = ["digits", "mqar", "icl-regression", "sort"]  # mnist1d generation takes seconds: tested on its own
GENERATED = ["mqar", "icl-regression", "sort"]


@pytest.fixture(scope="module")
def tasks() -> dict[str, Task]:
    return {name: get_task(name) for name in FAST}


def body_output(task: Task, width: int = 16) -> torch.Tensor:
    """A fake body output of the shape the task's head expects."""
    target = task.output_target(B)
    if target is None:
        shape = task.body_input_shape(B)
        shape = shape[:1] + (width,) + shape[2:] if len(shape) == 4 else shape[:-1] + (width,)
    else:
        shape = tuple(width if t is None else t for t in target)
    return torch.randn(shape)


def test_registry_names():
    assert set(task_names()) >= {"mnist1d", "digits", "mqar", "icl-regression", "sort"}
    assert [c.name for c in all_tasks()] == task_names()
    assert get_task("icl_regression").name == "icl-regression"  # underscores accepted


def test_unknown_task_lists_names_and_suggests():
    with pytest.raises(ArchgramError) as err:
        get_task("mnist")
    text = str(err.value)
    assert "did you mean 'mnist1d'" in text and "digits" in text and "sort" in text


def test_bad_task_arguments_are_archgram_errors():
    with pytest.raises(ArchgramError, match="bad arguments"):
        get_task("sort", lenght=5)
    with pytest.raises(ArchgramError, match="seq_len"):
        get_task("mqar", seq_len=63)


def test_register_task_rejects_duplicates():
    class Other(Task):
        name = "sort"

    with pytest.raises(ArchgramError, match="already registered"):
        register_task(Other)


@pytest.mark.parametrize("name", FAST)
def test_data_deterministic_with_declared_shapes(tasks, name):
    task = tasks[name]
    a = task.data(0)
    assert task.data(0) is a  # cached in memory
    b = type(task)(**task.config()).data(0)  # a fresh object regenerates the same data
    for split in ("train", "val", "test"):
        for x, y in zip(a.split(split), b.split(split), strict=True):
            assert torch.equal(x, y)
    assert a.n_train > a.n_val > 0 and a.n_test > 0
    stem = task.stem(task.body_input_shape(B))
    with torch.no_grad():
        assert tuple(stem(a.x_train[:B]).shape) == task.body_input_shape(B)
        assert tuple(stem(a.x_val[:B]).shape) == task.body_input_shape(B)


@pytest.mark.parametrize("name", GENERATED)
def test_generated_data_changes_with_seed(tasks, name):
    task = tasks[name]
    assert not torch.equal(task.data(0).x_train, task.data(1).x_train)
    d = task.data(0)
    assert not torch.equal(d.x_train[: d.n_val], d.x_val)
    assert not torch.equal(d.x_val[: d.n_test], d.x_test[: d.n_val])


@pytest.mark.parametrize("name", FAST)
def test_train_validation_and_test_splits_are_disjoint(tasks, name):
    """Search reads validation only; the test split is held out, so no example
    may appear in two splits."""
    d = tasks[name].data(0)
    rows = {split: {tuple(r.flatten().tolist()) for r in d.split(split)[0]} for split in ("train", "val", "test")}
    assert not rows["train"] & rows["val"] and not rows["train"] & rows["test"] and not rows["val"] & rows["test"]


def test_validation_is_carved_from_train_with_a_fixed_seed():
    x, y = torch.arange(20.0).unsqueeze(1), torch.arange(20)
    data = TaskData(x, y, None, None, x[:2], y[:2])
    a, b = data.with_validation(0.25, seed=3), data.with_validation(0.25, seed=3)
    assert a.n_val == 5 and a.n_train == 15 and torch.equal(a.x_val, b.x_val)
    assert sorted(torch.cat([a.y_train, a.y_val]).tolist()) == list(range(20))
    assert not torch.equal(a.x_val, data.with_validation(0.25, seed=4).x_val)
    assert a.with_validation(0.5, seed=0) is a  # an existing validation split is kept


@pytest.mark.parametrize("name", FAST)
def test_head_loss_and_metric(tasks, name):
    task = tasks[name]
    data = task.data(0)
    h = body_output(task)
    head = task.head(tuple(h.shape))
    pred = head(h)
    y = data.y_train[:B]
    loss = task.loss(pred, y)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    score = task.metric(pred.detach(), y)
    assert math.isfinite(score)
    if task.metric_name == "accuracy":
        assert 0 <= score <= 1
    assert task.describe(B)["metric"] == task.metric_name


def test_heads_reject_wrong_shapes(tasks):
    with pytest.raises(ShapeError):
        tasks["mqar"].head((B, 63, 16))  # per-token head needs the same N
    with pytest.raises(ShapeError):
        tasks["sort"].head((B, 16, 4, 4))  # pointer head needs a sequence
    with pytest.raises(ShapeError):
        tasks["sort"].check_body_output((B, 11, 4))
    tasks["sort"].check_body_output((B, 10, 4))
    tasks["digits"].check_body_output((B, 3, 5))  # pooling head takes anything


@pytest.mark.parametrize("shape", [(B, 12, 5, 7), (B, 9, 12)])
def test_classification_head_pools_any_rank(shape):
    head = ClassificationHead(shape, 10)
    assert head(torch.randn(shape)).shape == (B, 10)
    assert head.flops > 0


def test_mqar_targets_correct_by_construction():
    rng = np.random.default_rng(0)
    x, y = generate_mqar(200, vocab=64, seq_len=64, kv_pairs=4, rng=rng)
    assert x.shape == y.shape == (200, 64)
    assert x.min() >= 0 and x.max() < 64
    for seq, tgt in zip(x, y, strict=True):
        pairs = dict(zip(seq[0:8:2], seq[1:8:2], strict=True))
        assert len(pairs) == 4 and all(k < 32 <= v for k, v in pairs.items())  # distinct keys, split vocabulary
        queries = np.nonzero(tgt != IGNORE)[0]
        assert len(queries) == 4 and (queries >= 8).all() and (queries % 2 == 0).all()
        assert sorted(seq[queries]) == sorted(pairs)  # every key asked once
        for q in queries:
            assert tgt[q] == pairs[seq[q]]
        # Outside the context, key tokens appear only as queries.
        rest = [i for i in range(8, 64) if seq[i] < 32]
        assert rest == list(queries)


def test_mqar_metric_only_counts_queries(tasks):
    task = tasks["mqar"]
    y = task.data(0).y_val[:B]
    pred = torch.full((B, 64, 64), -10.0)
    pred.scatter_(2, y.clamp(min=0).unsqueeze(-1), 10.0)  # right at queries, "0" elsewhere
    assert task.metric(pred, y) == 1.0
    assert task.chance() == pytest.approx(1 / 32)


def test_icl_regression_least_squares_beats_zero(tasks):
    """In-context linear regression (S18)."""
    task = tasks["icl-regression"]
    ref = task.reference(0)
    assert ref["least_squares"] > 10 * ref["zero"]  # neg MSE: e.g. -0.02 vs -1.0
    assert ref["bayes_ridge"] >= ref["least_squares"] - 1e-3
    assert ref["least_squares"] < 0 and ref["zero"] == pytest.approx(-1.0, abs=0.15)
    # Query tokens never hold their own label.
    x = task.data(0).x_val
    assert (x[:, task.n_context:, task.dim:] == 0).all()
    assert (x[:, : task.n_context, task.dim + 1] == 1).all()
    # A perfect predictor scores 0.
    y = task.data(0).y_val
    pred = torch.zeros(len(y), task.length)
    pred[:, task.n_context:] = y
    assert task.metric(pred, y) == 0.0


def test_sort_target_is_argsort(tasks):
    """Sorting task for Pointer Networks (S03)."""
    data = tasks["sort"].data(0)
    x, y = data.x_train.squeeze(-1), data.y_train
    assert torch.equal(y, torch.argsort(x, dim=1))
    ordered = torch.gather(x, 1, y)
    assert (ordered[:, 1:] >= ordered[:, :-1]).all()
    assert data.x_train.shape[1:] == (10, 1)


def test_pointer_decoder_learns_to_sort_from_a_rank_encoding_body():
    """Pointer Networks (S03): the decoder alone (on a body that encodes each number's rank) learns
    to emit the argsort, pointer by pointer, from its own previous pointers."""
    torch.manual_seed(0)
    task = get_task("sort", n_train=64, n_val=8)
    y = task.data(0).y_train
    ranks = torch.argsort(y, dim=1)  # rank of each input position
    h = torch.nn.functional.one_hot(ranks, 10).float()  # an oracle body output
    head = task.head((64, 10, 10))
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        task.loss(head(h), y).backward()
        opt.step()
    assert task.metric(head(h), y) > 0.95


def test_sampler_accepts_task_targets(tasks):
    g = Grammar.from_text("net : linear(out=16) | permute(order=(0,2,1)) linear(out=16)\n")
    for name in ("mqar", "sort", "icl-regression"):
        task = tasks[name]
        for seed in range(4):
            d = g.sample(task.body_input_shape(B), seed=seed, target=task.output_target(B))
            task.check_body_output(d.output_shape)


def test_digits_reference_and_split(tasks):
    task = tasks["digits"]
    data = task.data(0)
    assert data.n_train + data.n_val + data.n_test == 1797
    assert abs(data.n_val - 0.15 * (data.n_train + data.n_val)) <= 1
    assert data.x_train.min() >= 0 and data.x_train.max() <= 1
    assert data.y_test.bincount().min() >= 35  # stratified


@pytest.mark.slow
def test_digits_logistic_regression_reference(tasks):
    assert tasks["digits"].reference()["logistic_regression"] > 0.9


def test_mnist1d_offline_standard_split():
    task = get_task("mnist1d")
    data = task.data(0)
    assert data.x_train.shape == (3600, 40, 1) and data.x_val.shape == (400, 40, 1)
    assert data.x_test.shape == (1000, 40, 1)
    assert data.y_train.dtype == torch.long and set(data.y_train.unique().tolist()) == set(range(10))
    assert task.body_input_shape(B) == (B, 40, 1)
    assert task.published["cnn"] == 0.94 and task.published["logistic_regression"] == 0.32
    assert get_task("mnist1d").data(5).x_test is data.x_test  # one fixed benchmark, generated once per process


@pytest.mark.slow
def test_mnist1d_generation_deterministic():
    from mnist1d.data import get_dataset_args, make_dataset

    ours = get_task("mnist1d").data(0)
    raw = make_dataset(get_dataset_args())
    train = torch.cat([ours.x_train, ours.x_val]).squeeze(-1).numpy()
    assert np.allclose(np.sort(train, axis=0), np.sort(raw["x"], axis=0), atol=1e-6)
    assert np.array_equal(ours.y_test.numpy(), raw["y_test"])
