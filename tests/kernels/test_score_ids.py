"""The flash kernels name their SCORE ids and sweep STAGEs: one Triton constexpr
per score in ``spec.KERNEL_SCORES`` with that score's id, and no kernel
compares either against a bare number (issue 19)."""
import os
import pathlib
import re

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernel modules are imported (as the other kernel tests)

import triton.language as tl  # noqa: E402

from archgram.kernels.flash import common  # noqa: E402
from archgram.kernels.flash.spec import KERNEL_SCORES, SCORE_IDS  # noqa: E402

FLASH = pathlib.Path(common.__file__).parent


def test_every_kernel_score_has_a_constexpr_name_with_its_id():
    for score in KERNEL_SCORES:
        name = getattr(common, score.upper(), None)
        assert isinstance(name, tl.constexpr), f"archgram.kernels.flash.common lacks {score.upper()} = tl.constexpr(...)"
        assert name.value == SCORE_IDS[score], f"{score.upper()} is {name.value}, the table says {SCORE_IDS[score]}"


def test_sweep_stages_are_distinct():
    stages = [common.COUNT_PASS, common.STATS_PASS, common.WEIGHTED_PASS]
    assert all(isinstance(s, tl.constexpr) for s in stages)
    assert len({s.value for s in stages}) == len(stages)


def test_kernels_compare_scores_and_stages_by_name_only():
    literal = re.compile(r"\b(SCORE|STAGE)\s*[!=<>]=?\s*\d|\bSCORE,\s*\d")  # a comparison or a positional STAGE
    found = [f"{path.name}:{n}: {line.strip()}" for path in sorted(FLASH.glob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1) if literal.search(line)]
    assert not found, "bare score / stage numbers:\n" + "\n".join(found)
