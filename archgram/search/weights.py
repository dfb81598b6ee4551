"""Trained weights of a search's trials, kept beside the study.

``runs/digits.db`` keeps trial N's trained state dict in
``runs/digits.weights/N.safetensors`` (archgram's own state-dict keys; the
derivation hash and score in the file's metadata). The Ray worker that trained
the trial writes the file, so on a multi-machine cluster it lands on that
worker's disk: there, unless the directory is shared, ``archgram export``
retrains the trial instead (and says so). The driver keeps the files of the
best :data:`KEEP` trials by score and deletes the rest, so disk use stays
bounded however long a search runs. Safetensors only: nothing is unpickled.
"""
from __future__ import annotations

import heapq
import os
import re
import tempfile
from pathlib import Path

import torch
from torch import nn

#: Trials whose weights a search keeps (the leaderboard's top by score).
KEEP = 10
_FILE = re.compile(r"(\d+)\.safetensors")


def weights_dir(url: str) -> Path | None:
    """The weights folder of a SQLite study (``x.db`` -> ``x.weights``); None for other URLs."""
    if not url.startswith("sqlite:///"):
        return None
    db = Path(url[len("sqlite:///"):])
    return db.with_name(f"{db.stem}.weights")


def weights_file(url: str, number: int) -> str | None:
    folder = weights_dir(url)
    return None if folder is None else str(folder / f"{number}.safetensors")


def state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as separate contiguous CPU tensors (safetensors refuses shared storage)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_weights(model: nn.Module, path: str, metadata: dict[str, str] | None = None) -> str | None:
    """Write ``model``'s state dict to ``path`` atomically; the error message, or
    None. A trial never fails because its weights could not be kept."""
    from safetensors.torch import save_file

    try:
        folder = os.path.dirname(path) or "."
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        os.close(fd)
        try:
            save_file(state_tensors(model), tmp, metadata={k: str(v) for k, v in (metadata or {}).items()})
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except Exception as exc:  # noqa: BLE001 - disk full, read-only folder, ...
        return f"{type(exc).__name__}: {exc}"
    return None


def read_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


class WeightKeeper:
    """Keeps the weight files of the ``keep`` best-scoring trials, deletes the rest.

    Told each finished trial once (``add``); on a resumed search it starts from
    the files already there (their scores are in the files' metadata)."""

    def __init__(self, folder: Path | None, keep: int = KEEP):
        self.folder, self.keep = folder, keep
        self.best: list[tuple[float, int]] = []  # min-heap of (score, trial)
        if folder is None or not folder.is_dir():
            return
        for f in folder.iterdir():
            m = _FILE.fullmatch(f.name)
            if not m:
                continue
            try:
                score = float(read_metadata(f).get("score", "nan"))
            except Exception:  # noqa: BLE001 - an unreadable file is dropped below
                score = float("nan")
            self.add(int(m.group(1)), score if score == score else None)

    @classmethod
    def for_url(cls, url: str, keep: int = KEEP) -> WeightKeeper:
        return cls(weights_dir(url), keep)

    def add(self, number: int, score: float | None) -> None:
        if self.folder is None:
            return
        if score is None:  # failed or pruned: its file (if any) is of no use
            self._drop(number)
            return
        heapq.heappush(self.best, (score, number))
        while len(self.best) > self.keep:
            _, worst = heapq.heappop(self.best)
            self._drop(worst)

    def _drop(self, number: int) -> None:
        try:
            (self.folder / f"{number}.safetensors").unlink(missing_ok=True)  # type: ignore[operator]
        except OSError:
            pass
