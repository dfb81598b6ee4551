"""Every grammar example in docs/grammar.md is real: ```pcfg blocks load,
```pcfg-error blocks raise GrammarError (with a location)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from archgram.errors import GrammarError
from archgram.grammar.model import Grammar

DOC = Path(__file__).resolve().parent.parent / "docs" / "grammar.md"
FENCE = re.compile(r"^```(pcfg|pcfg-error)[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def blocks(kind: str) -> list[tuple[int, str]]:
    text = DOC.read_text()
    return [(text[: m.start()].count("\n") + 1, m.group(2)) for m in FENCE.finditer(text) if m.group(1) == kind]


def test_doc_has_examples_of_both_kinds():
    assert len(blocks("pcfg")) >= 10
    assert len(blocks("pcfg-error")) >= 3


@pytest.mark.parametrize("line, source", blocks("pcfg"), ids=lambda v: f"line{v}" if isinstance(v, int) else "")
def test_pcfg_block_loads(line, source):
    Grammar.from_text(source, path=str(DOC.parent / f"grammar.md:{line}"))


@pytest.mark.parametrize("line, source", blocks("pcfg-error"), ids=lambda v: f"line{v}" if isinstance(v, int) else "")
def test_pcfg_error_block_raises_grammar_error(line, source):
    with pytest.raises(GrammarError) as info:
        Grammar.from_text(source)
    assert info.value.location is not None and info.value.location.line >= 1
