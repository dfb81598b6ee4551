"""Multi-fidelity rungs (successive halving around any strategy), zero-cost proxies and
the prescreen, and the step-metered local loop."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from archgram.errors import ArchgramError
from archgram.grammar.model import Grammar
from archgram.search.fidelity import SuccessiveHalving, rung_budgets
from archgram.search.prescreen import Prescreen, check_prescreen
from archgram.search.proxies import PROXIES
from archgram.search.strategies.base import Proposal, Strategy
from archgram.tasks import get_task

WIDTHS = "start network\nnetwork : linear(out=4 | 8 | 16 | 32 | 64 | 128 | 256 | 512) relu"


class Listed(Strategy):
    """Proposes the widths grammar's architectures in order, and remembers what it was told."""

    name = "listed"

    def __init__(self):
        g = Grammar.from_text(WIDTHS, path="<widths>")
        super().__init__(g, (8, 1, 8, 8), seed=0)
        self.items = [g.sample((8, 1, 8, 8), seed=s) for s in range(200)]
        self.items = list({d.hash(): d for d in self.items}.values())
        self.told: list[tuple[str, float | None]] = []
        self.i = 0

    def propose(self) -> Proposal:
        self.i += 1
        return Proposal(self.items[(self.i - 1) % len(self.items)])

    def observe(self, derivation, score, metrics=None):
        self.told.append((derivation.hash(), score))


def test_rung_budgets_divide_the_step_budget_and_refuse_what_it_cannot_hold():
    assert rung_budgets(900, 3, 3) == [100, 300, 900]
    assert rung_budgets(500, 1, 3) == [500]
    with pytest.raises(ArchgramError, match="first rung of 5 steps"):
        rung_budgets(45, 3, 3)
    with pytest.raises(ArchgramError, match="pure step budget"):
        SuccessiveHalving(Listed(), "60s")


def test_successive_halving_promotes_the_top_third_and_teaches_the_strategy_only_rung_zero():
    inner = Listed()
    sh = SuccessiveHalving(inner, "900steps", rungs=3, eta=3)
    first = [sh.ask() for _ in range(3)]
    assert [p.budget for p in first] == ["100steps"] * 3
    for p, score in zip(first, (0.2, 0.9, 0.5)):
        sh.tell(p.derivation, score)
    promoted = sh.ask()  # 3 finished on rung 0: the best third (one) goes up
    assert promoted.origin == "promotion" and promoted.budget == "300steps"
    assert promoted.derivation.hash() == first[1].derivation.hash()
    fresh = sh.ask()
    assert fresh.budget == "100steps" and fresh.origin != "promotion"  # nothing else is promotable yet
    sh.tell(promoted.derivation, 0.95)
    assert [s for _, s in inner.told] == [0.2, 0.9, 0.5]  # the rung-1 score never reaches the strategy


def test_successive_halving_replay_does_not_promote_twice():
    inner = Listed()
    d = inner.items[:3]
    sh = SuccessiveHalving(inner, "900steps")
    sh.replay([(d[0], 0.2, {"budget": "100steps"}), (d[1], 0.9, {"budget": "100steps"}),
               (d[2], 0.5, {"budget": "100steps"}), (d[1], 0.95, {"budget": "300steps"})])
    p = sh.ask()
    assert p.origin != "promotion" and p.budget == "100steps"


def test_prescreen_trains_the_proxys_best_of_k_and_refuses_what_the_budget_cannot_hold():
    digits = get_task("digits")
    inner = Listed()
    pre = Prescreen(inner, digits, 8, k=4, proxy="params")
    chosen = pre.ask()
    widths = [it.root.children[0].args["out"] if hasattr(it.root.children[0], "args") else None
              for it in inner.items[:4]]
    assert pre.evaluations == 4
    assert chosen.derivation.hash() == inner.items[max(range(4), key=lambda i: widths[i])].hash()
    assert chosen.info["proxy"]["of"] == 4
    with pytest.raises(ArchgramError, match="more than half"):
        check_prescreen(8, 10, "synflow")
    with pytest.raises(ArchgramError, match="unknown proxy"):
        check_prescreen(2, 100, "magic")


class _Sum:
    """A task stand-in for proxies called on a bare module: summed-output loss."""

    def loss(self, pred, y):
        return pred.sum()


def test_synflow_of_a_linear_layer_is_the_sum_of_its_absolute_weights():
    torch.manual_seed(0)
    lin = nn.Linear(5, 3)
    expected = float((lin.weight.abs().sum() + lin.bias.abs().sum()).detach())
    # R = sum over 4 all-ones rows of (|W| 1 + |b|): dR/dtheta = 4 for every weight
    got = PROXIES["synflow"](lin, torch.randn(4, 5), None, _Sum())
    assert got == pytest.approx(math.log(4 * expected), rel=1e-6)
    assert (lin.weight >= 0).all()  # synflow works on |theta|; it is a proxy of the untrained net only


def test_gradnorm_is_the_norm_of_the_loss_gradient():
    torch.manual_seed(0)
    lin = nn.Linear(5, 1, bias=False)
    x = torch.randn(4, 5)
    # d/dW sum(W x_i) = sum_i x_i
    assert PROXIES["gradnorm"](lin, x, None, _Sum()) == pytest.approx(math.log(float(x.sum(0).norm())), rel=1e-6)


def test_local_loop_spends_its_steps_and_scores_the_final_pick_on_test():
    from archgram.search.loop import run_local

    digits = get_task("digits")
    recipe = digits.recipe.override(budget="12steps", batch_size=8)
    out = run_local(Listed(), digits, recipe, total_steps=30, seed=0)
    assert out.steps >= 30 and len(out.trials) == 3 and out.best == max(t["score"] for t in out.trials)
    assert out.test is not None and 0 <= out.test <= 1


def test_warm_promotion_trains_only_the_steps_its_rung_lacks_and_replays_by_recorded_rung():
    sh = SuccessiveHalving(Listed(), "900steps", rungs=3, eta=3, warm_start=True)
    first = [sh.ask() for _ in range(3)]
    for p, score in zip(first, (0.2, 0.9, 0.5)):
        sh.tell(p.derivation, score)
    promoted = sh.ask()
    assert promoted.origin == "promotion" and promoted.budget == "200steps"  # 300 - 100 already trained
    assert promoted.info["cold_budget"] == "300steps"
    # resumed from a study: a warm promotion's budget is no rung's fresh budget, its recorded rung says where it was
    again = SuccessiveHalving(Listed(), "900steps", rungs=3, eta=3, warm_start=True)
    d = [p.derivation for p in first]
    again.replay([(d[0], 0.2, {"budget": "100steps"}), (d[1], 0.9, {"budget": "100steps"}),
                  (d[2], 0.5, {"budget": "100steps"}), (d[1], 0.95, {"budget": "200steps", "rung": 1})])
    assert again.scores[1] == {d[1].hash(): 0.95} and again.ask().origin != "promotion"


@pytest.mark.parametrize("inherit", [True, False])
def test_local_loop_continues_a_promotion_from_its_shorter_run_only_under_inheritance(inherit):
    from archgram.search.loop import run_local

    digits = get_task("digits")
    recipe = digits.recipe.override(budget="30steps", batch_size=8)
    sh = SuccessiveHalving(Listed(), "30steps", rungs=2, eta=3, warm_start=True)
    out = run_local(sh, digits, recipe, total_steps=50, seed=0, inherit=inherit)
    promoted = next(t for t in out.trials if t["origin"] == "promotion")
    rung0 = next(t for t in out.trials if t["hash"] == promoted["hash"] and t["origin"] != "promotion")
    assert rung0["steps"] == 10
    if inherit:  # every tensor of the rung-0 run carried over; 20 more steps make 30 in all
        assert promoted["steps"] == 20 and promoted["inherited"] > 0
    else:  # no weights to continue from: the whole rung from the initialisation
        assert promoted["steps"] == 30 and not promoted["inherited"]
