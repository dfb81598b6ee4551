"""Text helpers of the command-line interface: argument parsing, number formatting and
op descriptions. Pure functions of their arguments: the consoles and option
types the commands share are ``archgram.cli.common``."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from archgram.errors import ArchgramError, Location
from archgram.registry import did_you_mean

_SUFFIX = {"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


def parse_number(text: str) -> float:
    """'5e6', '5M', '200k', '1.5G' -> float; raise ValueError otherwise."""
    t = text.strip().replace("_", "")
    scale = 1.0
    if t and t[-1].lower() in _SUFFIX:
        scale, t = _SUFFIX[t[-1].lower()], t[:-1]
    value = float(t) * scale
    if math.isnan(value) or math.isinf(value):
        raise ValueError(text)
    return value


def parse_limits(items: list[str] | None) -> dict[str, float]:
    """``['depth=8', 'params=1M']`` -> ``{'depth': 8, 'params': 1e6}``, checked."""
    from archgram.grammar.model import LIMIT_NAMES

    out: dict[str, float] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise ArchgramError(f"--limit {item!r}: expected KEY=VALUE with KEY one of {', '.join(LIMIT_NAMES)}")
        if key not in LIMIT_NAMES:
            raise ArchgramError(f"--limit {item!r}: unknown limit '{key}'{did_you_mean(key, LIMIT_NAMES)} (limits are: {', '.join(LIMIT_NAMES)})")
        try:
            value = parse_number(raw)
        except ValueError:
            raise ArchgramError(f"--limit {item!r}: {raw.strip()!r} is not a number (e.g. 8, 5e6, 2M)") from None
        if value <= 0:
            raise ArchgramError(f"--limit {item!r}: limits must be positive")
        if key in ("depth", "nodes") and not float(value).is_integer():
            raise ArchgramError(f"--limit {item!r}: {key} must be a whole number")
        out[key] = int(value) if key in ("depth", "nodes") else value
    return out


def human(value: float | int | None, digits: int = 3) -> str:
    """1234567 -> '1.23M' (for tables; JSON keeps exact numbers)."""
    if value is None:
        return "-"
    value = float(value)
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.{digits}g}{unit}"
    return f"{value:.{digits}g}"


def shape_text(shape) -> str:
    return "(" + ",".join(str(d) for d in shape) + ")" if shape is not None else "-"


def short_loc(loc: Location | None) -> str:
    """``/long/path/einspace.pcfg:24:1`` -> ``einspace.pcfg:24:1`` for tables."""
    if loc is None:
        return "-"
    return f"{Path(loc.file).name}:{loc.line}:{loc.column}"


def limits_dict(limits) -> dict[str, float]:
    from dataclasses import asdict

    return asdict(limits)


def ops_text(counts: dict[str, int]) -> str:
    return " ".join(f"{k}×{v}" if v > 1 else k for k, v in counts.items())


def arg_text(name: str, arg) -> str:
    """'out: int ≥1 (required)', 'bias: bool = True', 'dim: int = 1 in [1, 3]'."""
    from archgram.ops.registry import REQUIRED

    text = f"{name}: {arg.type.__name__}"
    if arg.default is not REQUIRED:
        text += f" = {arg.default!r}"
    if arg.choices is not None:
        text += " in {" + ", ".join(map(str, arg.choices)) + "}"
    if arg.low is not None and arg.high is not None:
        text += f" in [{_num(arg.low)}, {_num(arg.high)}]"
    elif arg.low is not None:
        text += f" ≥{_num(arg.low)}"
    elif arg.high is not None:
        text += f" ≤{_num(arg.high)}"
    if arg.default is REQUIRED:
        text += " (required)"
    return text


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def jsonable(value: Any) -> Any:
    """Tuples to lists, non-finite floats to None, anything odd to str."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def op_to_dict(spec) -> dict[str, Any]:
    from archgram.ops.registry import REQUIRED

    return {
        "name": spec.name,
        "family": spec.family,
        "kind": spec.kind,
        "args": [
            {
                "name": name,
                "type": arg.type.__name__,
                "required": arg.default is REQUIRED,
                "default": None if arg.default is REQUIRED else jsonable(arg.default),
                "choices": None if arg.choices is None else jsonable(arg.choices),
                "low": arg.low,
                "high": arg.high,
                "doc": arg.doc,
            }
            for name, arg in spec.args.items()
        ],
        "refs": list(spec.refs),
        "doc": op_doc(spec),
    }


def op_doc(spec) -> str:
    """The first paragraph of the op's docstring on one line (the registry keeps
    only the first line, which may stop mid-sentence)."""
    import inspect

    text = inspect.cleandoc(spec.cls.__doc__ or "")
    para = text.split("\n\n")[0].strip()
    return " ".join(para.split()) or spec.doc
