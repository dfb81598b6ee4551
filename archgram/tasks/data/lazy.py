"""Rows of an array that stays on disk: data larger than memory.

A ``.npy`` file opened with ``mmap_mode='r'`` is read only where it is
indexed, and the pages it reads sit in the OS page cache shared by every
worker on the machine. ``LazyRows`` is the tensor-like view a DataTask keeps
for such inputs: the rows of one split (an index array, never a copy), laid
out for the modality per batch. The evaluator draws training batches through
``loader``, a ``DataLoader`` whose worker processes read ahead.

Pickled (to Ray workers), a LazyRows is its file path and row indices: the
file must be readable at that path where the workers run (the same machine,
or a shared file system); the data itself never travels.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from archgram.tasks.data.kinds import LAYOUTS


class LazyRows:
    """Rows ``rows`` of the memory-mapped array at ``path``, laid out for
    ``modality``; indexing returns CPU tensors of just those rows."""

    def __init__(self, path: str, rows: np.ndarray, modality: str, workers: int = 2):
        self.path, self.rows, self.modality, self.workers = str(path), np.asarray(rows, np.int64), modality, workers
        self._open()

    def _open(self) -> None:
        self.array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        self.row_shape = tuple(LAYOUTS[self.modality](self.array[:1]).shape[1:])

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "rows": self.rows, "modality": self.modality, "workers": self.workers}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open()

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, idx: np.ndarray) -> LazyRows:
        """The rows ``idx`` of these rows (indices only; nothing is read)."""
        return LazyRows(self.path, self.rows[idx], self.modality, self.workers)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.row_shape)

    def numpy(self, key: Any) -> np.ndarray:
        """The selected rows as a laid-out numpy array (read from disk, sorted
        for locality, returned in the order asked)."""
        if isinstance(key, torch.Tensor):
            key = key.cpu().numpy()
        rows = self.rows[key]
        if np.ndim(rows) == 0:
            return LAYOUTS[self.modality](self.array[int(rows)][None])[0]
        order = np.argsort(rows, kind="stable")
        block = np.empty((len(rows), *self.array.shape[1:]), self.array.dtype)
        block[order] = self.array[rows[order]]
        return LAYOUTS[self.modality](block)

    def __getitem__(self, key: Any) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.numpy(key)))

    def to(self, device: str | torch.device) -> LazyRows | _OnDevice:
        """Nothing moves now: each batch read is moved to ``device``."""
        return self if torch.device(device).type == "cpu" else _OnDevice(self, torch.device(device))

    def loader(self, index_batches: Iterable[torch.Tensor], workers: int | None = None) -> Iterator[torch.Tensor]:
        """Batches for ``index_batches``, in order, read ahead by a DataLoader's
        ``workers`` processes (0 reads in this process)."""
        from torch.utils.data import DataLoader

        workers = self.workers if workers is None else workers
        loader = DataLoader(_Batches(self), batch_sampler=_Sampler(index_batches), num_workers=workers,
                            collate_fn=_first, persistent_workers=False)
        return iter(loader)


class _OnDevice:
    """LazyRows whose batches are moved to a device as they are read."""

    def __init__(self, rows: LazyRows, device: torch.device):
        self.rows, self.device = rows, device

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.rows.shape

    def __getitem__(self, key: Any) -> torch.Tensor:
        return self.rows[key].to(self.device)

    def loader(self, index_batches: Iterable[torch.Tensor], workers: int | None = None) -> Iterator[torch.Tensor]:
        return self.rows.loader(index_batches, workers)

    def to(self, device: str | torch.device):
        return self.rows.to(device)


class _Batches:
    """A map-style dataset whose item is a whole batch (its key: the index tensor)."""

    def __init__(self, rows: LazyRows):
        self.rows = rows

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        return self.rows[idx]


class _Sampler:
    def __init__(self, batches: Iterable[torch.Tensor]):
        self.batches = batches

    def __iter__(self):
        for idx in self.batches:
            yield [idx]  # one "item" per batch: _Batches reads the whole batch at once


def _first(items: list) -> Any:
    return items[0]
