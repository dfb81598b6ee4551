"""``--train-option`` words -> the ``train_options`` dict of the evaluator.

A bare method name (``at``, ``vat``) switches adversarial training on; every
other word is ``KEY=VALUE`` for a ``TrainOptions`` field (``adv_eps=0.1``,
``schedule=constant``), its value read by the field's type. The evaluator's
``TrainOptions.from_dict`` then checks names and ranges, so the CLI and Python
callers share one set of rules.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any

from archgram.errors import ArchgramError

_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _coerce(key: str, text: str, annotation: str) -> Any:
    """Read ``text`` as the type named by a dataclass field's (string) annotation."""
    value = text.strip()
    kinds = [k.strip() for k in str(annotation).split("|")]
    if "None" in kinds and value.lower() in ("none", "null", ""):
        return None
    try:
        if "bool" in kinds:
            low = value.lower()
            if low in _TRUE + _FALSE:
                return low in _TRUE
            raise ValueError
        if "int" in kinds:
            return int(value)
        if "float" in kinds:
            return float(value)
    except ValueError:
        want = next(k for k in kinds if k != "None")
        raise ArchgramError(f"--train-option {key}={text}: expected a {want}") from None
    return value


def parse_cli(items: list[str] | None) -> dict[str, Any]:
    """``["at", "adv_eps=0.1"]`` -> ``{"adversarial": "at", "adv_eps": 0.1}`` (checked by TrainOptions)."""
    from archgram.search.evaluator import TrainOptions
    from archgram.search.training.adversarial import METHODS

    types = {f.name: f.type for f in fields(TrainOptions)}
    out: dict[str, Any] = {}
    for item in items or []:
        word = item.strip()
        if "=" not in word:
            if word not in METHODS:
                raise ArchgramError(f"--train-option {item!r}: give a method ({', '.join(METHODS)}) or KEY=VALUE "
                                    f"with KEY one of {', '.join(types)}")
            key, value = "adversarial", word
        else:
            key, text = (p.strip() for p in word.split("=", 1))
            if key not in types:
                import difflib

                close = difflib.get_close_matches(key, list(types), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise ArchgramError(f"--train-option: unknown option '{key}'{hint} (options: {', '.join(types)})")
            value = _coerce(key, text, types[key])
        if key in out and out[key] != value:
            raise ArchgramError(f"--train-option gives {key} twice ({out[key]!r} and {value!r})")
        out[key] = value
    TrainOptions.from_dict(out)  # names and ranges, before anything runs
    return out
