"""The one registry helper every name -> entry table uses."""
from __future__ import annotations

import sys

import pytest

from archgram.errors import ArchgramError, ShapeError
from archgram.registry import Registry, did_you_mean, import_submodules, unknown


class Oops(ArchgramError):
    pass


def test_unknown_name_suggests_the_closest_and_lists_the_known_ones():
    reg = Registry("suite", error=Oops)
    reg.add("kernels", 1)
    reg.add("long-context", 2)
    with pytest.raises(Oops, match=r"unknown suite 'kernals'; did you mean 'kernels'\? known: kernels, long-context"):
        reg.get("kernals")
    with pytest.raises(Oops, match=r"unknown suite 'zzz'; known: kernels, long-context$"):
        reg.get("zzz")
    assert reg.get("kernels") == 1 and "kernels" in reg and "zzz" not in reg and len(reg) == 2


def test_a_taken_name_is_refused_but_the_same_registration_again_is_not():
    reg = Registry("op", same=lambda old, new: old[0] is new[0], list_known=False)
    cls = type("X", (), {})
    reg.add("x", (cls, "spec 1"))
    reg.add("x", (cls, "spec 2"))  # a re-imported module registers the same class again
    assert reg.get("x")[1] == "spec 2"
    with pytest.raises(ArchgramError, match="op 'x' is already registered"):
        reg.add("x", (type("Y", (), {}), "other"))
    with pytest.raises(ArchgramError, match=r"unknown op 'y'$"):  # long tables do not list every name
        reg.get("y")


def test_the_loader_runs_once_on_the_first_lookup_and_may_register():
    calls = []
    reg: Registry[int] = Registry("task", loader=lambda: calls.append(1) or reg.add("late", 3))
    reg.add("early", 1)
    assert calls == [] and reg.names() == ["early", "late"] and reg.get("late") == 3 and calls == [1]


def test_normalised_names_and_decorator_and_remove():
    reg = Registry("task", normalise=lambda n: n.strip().lower().replace("_", "-"))
    deco = reg.decorator()

    @deco
    class IclRegression:
        name = "ICL_Regression"

    assert reg.get(" icl-regression ") is IclRegression and reg.names() == ["icl-regression"]
    reg.remove("ICL_REGRESSION")
    assert "icl-regression" not in reg


def test_shared_registries_use_the_helper():
    """Ops, attention parts, bench suites and compiler passes are Registry instances
    (one did-you-mean): an attention part typo is still a ShapeError while sampling."""
    from archgram.bench.base import SUITES
    from archgram.compiler.passes import PASSES
    from archgram.ops.attention.parts import SCORES
    from archgram.ops.registry import OPS

    assert all(isinstance(r, Registry) for r in (OPS, SCORES, SUITES, PASSES))
    with pytest.raises(ShapeError, match="did you mean 'sigmoid'"):
        SCORES.resolve("sigmoidd")
    assert did_you_mean("lienar", OPS.names()) == "; did you mean 'linear'?"


def test_import_submodules_imports_each_public_module_in_name_order(tmp_path, monkeypatch):
    pkg = tmp_path / "plugpkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("ORDER = []\n")
    for name in ("zeta", "alpha", "_private"):
        (pkg / f"{name}.py").write_text(f"from plugpkg import ORDER\nORDER.append({name!r})\n")
    (pkg / "sub" / "__init__.py").write_text("raise RuntimeError('a subpackage is not imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("plugpkg", "plugpkg.alpha", "plugpkg.zeta"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert import_submodules("plugpkg") == ["alpha", "zeta"]
    assert sys.modules["plugpkg"].ORDER == ["alpha", "zeta"]


def _lookups():
    """(public lookup, registry, a misspelt name, the name it should suggest) of
    every table migrated onto Registry."""
    from archgram.bench.base import SUITES, get_suite
    from archgram.compiler.passes import PASSES, get_pass
    from archgram.ops.attention.sparse_patterns import BLOCK_LAYOUTS, BlockSparse
    from archgram.search.prescreen import check_prescreen
    from archgram.search.proxies import PROXIES
    from archgram.search.schedulers import SCHEDULERS
    from archgram.search.store import OBJECTIVES, direction
    from archgram.search.strategies import STRATEGIES, get_strategy
    from archgram.search.training.adversarial import METHODS, get_method
    from archgram.search.training.options import OPTIMIZERS, check_training
    from archgram.tasks import TASKS, get_task

    return [
        (get_task, TASKS, "digts", "digits"),
        (get_strategy, STRATEGIES, "evolutoin", "evolution"),
        (get_method, METHODS, "vta", "vat"),
        (lambda name: check_training(1e-3, name), OPTIMIZERS, "sdg", "sgd"),
        (SCHEDULERS.get, SCHEDULERS, "ashaa", "asha"),
        (lambda name: check_prescreen(2, None, name), PROXIES, "synflw", "synflow"),
        (get_suite, SUITES, "kernals", "kernels"),
        (get_pass, PASSES, "fuse_attenton", "fuse_attention"),
        (direction, OBJECTIVES, "parms", "params"),
        (lambda name: BlockSparse(block=4, pattern=name).check(16, None), BLOCK_LAYOUTS, "bigbrd", "bigbird"),
    ]


def test_every_migrated_lookup_names_the_bad_key_the_close_match_and_every_known_name():
    for lookup, registry, typo, close in _lookups():
        with pytest.raises(ArchgramError) as info:
            lookup(typo)
        text = str(info.value)
        assert f"unknown {registry.kind} '{typo}'; did you mean '{close}'?" in text, text
        assert all(name in text.split("known: ")[-1] for name in registry.names()), text


def test_entries_fill_the_table_and_keep_their_names_taken():
    reg = Registry("problem", entries={"sum": 1, "sort": 2})
    assert reg.items() == [("sort", 2), ("sum", 1)]
    with pytest.raises(ArchgramError, match="already registered"):
        reg.add("sum", 3)


def test_fixed_name_lists_word_their_refusals_like_a_registry():
    assert unknown("split", "trian", ("train", "val", "test")) == \
        "unknown split 'trian'; did you mean 'train'? known: train, val, test"
    assert unknown("split", "zzz", ("train", "val", "test")) == "unknown split 'zzz'; known: train, val, test"


def _split(name):
    import torch

    from archgram.tasks.base import TaskData

    x, y = torch.zeros(4, 2), torch.zeros(4)
    TaskData(x, y, None, None, x, y).split(name)


def _layout(name):
    from archgram.distributed.context_parallel import check_layout

    check_layout(name)


@pytest.mark.parametrize("refuse, typo, close", [
    (_split, "vall", "val"),
    (_layout, "zigzg", "zigzag"),
])
def test_a_typo_in_a_fixed_name_list_gets_the_closest_name(refuse, typo, close):
    with pytest.raises(ArchgramError, match=rf"unknown .*'{typo}'; did you mean '{close}'\? known: "):
        refuse(typo)
