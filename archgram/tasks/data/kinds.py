"""What kind of task a data set is: a modality (image, sequence, tabular) read
from the inputs' shape and dtype, and a problem (classification, regression)
read from the targets' dtype. ``--task-kind`` overrides either part or both.

Rules (first axis = examples):

- inputs with 1 more axis (N, F) are tabular; (N, L, D) a sequence, unless
  uint8 (N, H, W), which is a greyscale image; (N, C, H, W) or (N, H, W, C) an image;
- integer, boolean or string targets are class labels; floating targets are values.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from archgram.errors import ArchgramError

MODALITIES = ("image", "sequence", "tabular")
PROBLEMS = ("classification", "regression")


@dataclass(frozen=True)
class Kind:
    modality: str
    problem: str

    def __str__(self) -> str:
        return f"{self.modality}-{self.problem}"


def parse_kind(text: str | None) -> tuple[str | None, str | None]:
    """``'image'``, ``'regression'`` or ``'image-classification'`` -> (modality, problem)."""
    if not text:
        return None, None
    modality = problem = None
    for part in str(text).strip().lower().replace("_", "-").split("-"):
        if part in MODALITIES and modality is None:
            modality = part
        elif part in PROBLEMS and problem is None:
            problem = part
        else:
            raise ArchgramError(f"--task-kind {text!r}: give a modality ({', '.join(MODALITIES)}), a problem "
                                f"({', '.join(PROBLEMS)}) or both, e.g. image-classification")
    return modality, problem


def _modality_from_shape(x: np.ndarray) -> str:
    rank = x.ndim - 1
    if rank == 1:
        return "tabular"
    if rank == 2:
        return "image" if x.dtype == np.uint8 else "sequence"
    if rank == 3:
        return "image"
    raise ArchgramError(f"inputs of shape {tuple(x.shape)}: expected (N, F) tabular, (N, L, D) sequence or "
                        "(N, C, H, W) image arrays; give --task-kind to say which")


def problem_of(y: np.ndarray) -> str:
    return "regression" if y.dtype.kind in "fc" else "classification"


def infer_kind(x: np.ndarray, y: np.ndarray, override: str | None = None) -> Kind:
    modality, problem = parse_kind(override)
    return Kind(modality or _modality_from_shape(x), problem or problem_of(y))


def _image_layout(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) view of an image array; channels-last (N, H, W, C) with C in
    1, 3, 4 is transposed (a view, no copy); (N, H, W) gains one channel."""
    if x.ndim == 2:  # a flat image the user called an image: cannot guess H and W
        raise ArchgramError(f"inputs of shape {tuple(x.shape)} cannot be images: give (N, C, H, W) or (N, H, W, C)")
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        if x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
            return x.transpose(0, 3, 1, 2)
        return x
    raise ArchgramError(f"inputs of shape {tuple(x.shape)} cannot be images")


def _sequence_layout(x: np.ndarray) -> np.ndarray:
    if x.ndim == 2:
        return x[:, :, None]  # a 1D signal: length L, one feature
    if x.ndim == 3:
        return x
    raise ArchgramError(f"inputs of shape {tuple(x.shape)} cannot be sequences: give (N, L) or (N, L, D)")


def _tabular_layout(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)


#: modality -> the view of raw inputs the stem receives (no copies)
LAYOUTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "image": _image_layout, "sequence": _sequence_layout, "tabular": _tabular_layout,
}
