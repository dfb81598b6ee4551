"""Algorithmic tasks of Positional Attention (S30): targets by hand, the
value-generalisation test split, and a small reproduction of the paper's
claim that attention routed by positions only extrapolates in value."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from archgram.errors import ArchgramError
from archgram.ops.registry import get_op
from archgram.tasks import get_task
from archgram.tasks.algorithmic import relative_mse

pytestmark = pytest.mark.catalog("S30")
STEPS = 60


@pytest.mark.parametrize("problem", ["sum", "cumsum", "cummin", "cummax", "sort"])
def test_targets_follow_each_problem_by_hand_and_the_test_split_is_scaled(problem):
    task = get_task("algorithmic", problem=problem, length=5, test_scale=10.0, n_train=20, n_val=10, n_test=30)
    data = task.data(0)
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        for row, want in zip(x[..., 0].tolist(), y.tolist(), strict=True):
            by_hand = {
                "sum": [sum(row)] * 5,
                "cumsum": [sum(row[: i + 1]) for i in range(5)],
                "cummin": [min(row[: i + 1]) for i in range(5)],
                "cummax": [max(row[: i + 1]) for i in range(5)],
                "sort": sorted(row),
            }[problem]
            assert want == pytest.approx(by_hand, abs=1e-5)
    assert data.x_train.abs().max() <= 1 and data.x_val.abs().max() <= 1
    assert 1 < data.x_test.abs().max() <= 10  # out-of-distribution values, same length
    with pytest.raises(ArchgramError, match="unknown problem"):
        get_task("algorithmic", problem="median")


def _fit(position: str, seed: int = 0) -> nn.Module:
    """One attention layer between scalar in/out maps, trained on the in-distribution sum."""
    torch.manual_seed(seed)
    spec = get_op("attention")
    attention = spec.build((64, 8, 8), spec.bind({"heads": 2, "position": {"name": position}}))
    model = nn.Sequential(nn.Linear(1, 8), attention, nn.Linear(8, 1))
    task = get_task("algorithmic", problem="sum", length=8, n_train=2048, n_val=64)
    data = task.data(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(STEPS):
        idx = torch.arange(64) + (step * 64) % 2048
        loss = task.loss(model(data.x_train[idx])[..., 0], data.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_positional_attention_extrapolates_in_value_where_content_attention_does_not():
    """The paper's OOD claim in miniature: trained on numbers in [-1, 1] to output
    their sum, the layer whose weights come from positions only stays accurate on
    numbers 10x larger (its routing cannot depend on values), while the same layer
    with content (q . k) weights, equally good in distribution, breaks down."""
    test = get_task("algorithmic", problem="sum", length=8, test_scale=10.0, n_test=256).data(1)
    scores = {}
    for position in ("positional", "none"):
        model = _fit(position)
        with torch.no_grad():
            ood = relative_mse(model(test.x_test)[..., 0], test.y_test)
            iid = relative_mse(model(test.x_val)[..., 0], test.y_val)
        scores[position] = (iid, ood)
    assert scores["positional"][0] < 0.02 and scores["none"][0] < 0.05, scores  # both fit in distribution
    assert scores["positional"][1] < 0.02, scores
    assert scores["none"][1] > 10 * scores["positional"][1], scores
