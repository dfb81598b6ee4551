"""Sample N architectures from a grammar and summarise them; optionally write
each derivation (JSON, Graphviz .dot, .png) to a folder. ``archgram sample``
prints this; tests and notebooks call it directly::

    summary = sample_grammar(g, (8, 3, 32, 32), n=20, seed=0, limits={"params": 1e6}, out="samples/")
    summary["samples"][0]   # {"index", "seed", "hash", "params", "flops", ..., "file"}

Sample i comes from seed ``seed + i``, so any one is reproduced alone with
``g.sample(shape, seed=seed + i)``. A folder that already holds a run is only
replaced when asked (``overwrite=True``), and then only the files a run writes.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from archgram.errors import ArchgramError
from archgram.grammar.elements import LIMIT_NAMES
from archgram.grammar.summary import op_counts
from archgram.registry import did_you_mean

#: Stop after this many sampling failures in a row when none has succeeded yet:
#: the grammar almost surely cannot take the input shape, so say so quickly.
GIVE_UP_AFTER = 5
#: The files a sample run writes (and ``overwrite=True`` may delete).
SAMPLE_FILE = re.compile(r"\d+_[0-9a-f]{16}\.(json|dot|png)")


def resolve_limits(grammar, overrides: Mapping[str, float] | None):
    """The grammar's limits with ``overrides`` ({"params": 1e6, ...}) applied."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(LIMIT_NAMES))
    if unknown:
        raise ArchgramError(f"unknown limit '{unknown[0]}'{did_you_mean(unknown[0], LIMIT_NAMES)} (limits are: {', '.join(LIMIT_NAMES)})")
    return grammar.limits.updated(**overrides), overrides


def sample_grammar(grammar, input_shape, n: int = 20, seed: int = 0, limits: Mapping[str, float] | None = None,
                   out: str | Path | None = None, dot: bool = False, overwrite: bool = False,
                   on_sample: Callable[[Any, dict], None] | None = None,
                   on_progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Sample ``n`` architectures for ``input_shape`` under the grammar's limits
    with ``limits`` overrides. With ``out``, write ``NNN_<hash>.json`` per sample
    (and ``.dot``, plus ``.png`` where Graphviz is installed, with ``dot``) and
    ``summary.json``. ``on_sample(derivation, row)`` sees each success,
    ``on_progress(done)`` each attempt. Returns the summary (JSON-ready)."""
    shape = tuple(input_shape)
    if dot and out is None:
        raise ArchgramError("dot files need an output folder (out=...)")
    lim, overrides = resolve_limits(grammar, limits)
    writer = None if out is None else _Writer(Path(out), grammar.name, n, dot, overwrite)
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for i in range(n):
        try:
            d = grammar.sample(shape, seed=seed + i, limits=lim)
        except ArchgramError as exc:
            failures.append({"index": i, "seed": seed + i, "error": str(exc)})
            if on_progress is not None:
                on_progress(i + 1)
            if not rows and len(failures) >= GIVE_UP_AFTER:
                break
            continue
        row = _row(d, i, seed + i)
        if writer is not None:
            writer.write(d, row)
        if on_sample is not None:
            on_sample(d, row)
        rows.append(row)
        if on_progress is not None:
            on_progress(i + 1)
    summary = {
        "grammar": {"name": grammar.name, "path": grammar.root_file, "sha256": grammar.sha256},
        "input_shape": list(shape), "n": n, "seed": seed,
        "limits": asdict(lim), "limit_overrides": overrides,
        "sampled": len(rows), "unique": len({r["hash"] for r in rows}),
        "seconds": time.perf_counter() - t_start,
        "samples": rows, "failures": failures,
    }
    if writer is not None:
        writer.summary(summary)
    return summary


def _row(d, index: int, seed: int) -> dict[str, Any]:
    return {
        "index": index, "seed": seed, "hash": d.hash(),
        "params": d.stats.get("params"), "flops": d.stats.get("flops"), "memory": d.stats.get("memory"),
        "depth": d.depth(), "nodes": d.size(), "output_shape": list(d.output_shape), "ops": op_counts(d),
        "rejections": d.stats.get("rejections"), "restarts": d.stats.get("restarts"),
    }


class _Writer:
    """Writes one sample run's files into a folder it has prepared."""

    def __init__(self, out: Path, name: str, n: int, dot: bool, overwrite: bool):
        self.out, self.name, self.dot = out, name, dot
        self.width = max(3, len(str(n - 1)))
        self.dot_bin = shutil.which("dot") if dot else None
        _prepare(out, overwrite)

    def write(self, d, row: dict) -> None:
        stem = f"{row['index']:0{self.width}d}_{row['hash']}"
        (self.out / f"{stem}.json").write_text(d.to_json() + "\n")
        row["file"] = f"{stem}.json"
        if not self.dot:
            return
        from archgram.grammar.graph import to_dot

        dot_path = self.out / f"{stem}.dot"
        dot_path.write_text(to_dot(d, title=f"{self.name} #{row['index']} {row['hash']}"))
        row["dot"] = dot_path.name
        png = _render(self.dot_bin, dot_path) if self.dot_bin else None
        if png:
            row["png"] = png.name

    def summary(self, summary: dict) -> None:
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ArchgramError(f"output folder {out} exists and is not a directory")
    if (out / "summary.json").exists():
        if not overwrite:
            raise ArchgramError(f"output folder {out} already holds a sample run (summary.json); "
                                 "replace it (--overwrite, overwrite=True) or pick another folder")
        for f in out.iterdir():  # only files a sample run writes
            if f.is_file() and (SAMPLE_FILE.fullmatch(f.name) or f.name == "summary.json"):
                f.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArchgramError(f"output folder {out}: cannot create it: {exc.strerror}") from None


def _render(dot_bin: str, dot_path: Path) -> Path | None:
    """``dot -Tpng``; a failure is a warning (the .dot file is still there)."""
    png = dot_path.with_suffix(".png")
    try:
        proc = subprocess.run([dot_bin, "-Tpng", str(dot_path), "-o", str(png)], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        warnings.warn(f"rendering {dot_path.name} failed: {exc}", stacklevel=2)
        return None
    if proc.returncode != 0:
        warnings.warn(f"rendering {dot_path.name} failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}",
                      stacklevel=2)
        return None
    return png

