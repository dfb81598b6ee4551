"""Read a data file (or a folder of images) into raw numpy splits.

One loader per kind of file, registered by suffix; ``load_path`` picks one. A
loader returns ``RawData``: 'train' and, where the file has them, 'val' and
'test' (inputs, targets) arrays, untouched (kind inference, label encoding and
checks come after). Nothing here unpickles: .npz loads with
``allow_pickle=False``, .pt with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from archgram.registry import did_you_mean
from archgram.tasks.data.checks import DataError

#: .npz / .pt keys of each split's (inputs, targets)
KEYS = {"train": ("x", "y"), "val": ("x_val", "y_val"), "test": ("x_test", "y_test")}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
FOLDER = "<folder>"  # the registry key of a folder of images


@dataclass
class RawData:
    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    info: dict[str, Any] = field(default_factory=dict)


Loader = Callable[[Path, dict[str, Any]], RawData]
LOADERS: dict[str, Loader] = {}


def loader(*suffixes: str) -> Callable[[Loader], Loader]:
    """Register a loader for files ending in ``suffixes`` (or ``FOLDER``)."""
    def add(fn: Loader) -> Loader:
        for s in suffixes:
            LOADERS[s] = fn
        return fn
    return add


def load_path(path: str | Path, options: dict[str, Any] | None = None) -> RawData:
    """The raw splits of ``path``; a one-line DataError for anything unreadable."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"--data {path}: no such file or folder")
    key = FOLDER if p.is_dir() else p.suffix.lower()
    if key not in LOADERS:
        known = ", ".join(sorted(k for k in LOADERS if k != FOLDER))
        raise DataError(f"--data {path}: unsupported file type '{p.suffix or '(none)'}'; give {known} or a folder of "
                        "images with one subfolder per class")
    try:
        return LOADERS[key](p, dict(options or {}))
    except DataError:
        raise
    except Exception as exc:  # a truncated zip, a corrupt parquet footer, ...
        raise DataError(f"--data {path}: cannot read it ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None


def _splits_from_mapping(get: Callable[[str], Any], names: list[str], path: Path) -> dict[str, tuple]:
    if "x" not in names or "y" not in names:
        raise DataError(f"--data {path}: needs arrays 'x' and 'y' (and optionally x_val/y_val, x_test/y_test); "
                        f"it holds: {', '.join(names) or 'nothing'}")
    out = {}
    for split, (kx, ky) in KEYS.items():
        if (kx in names) != (ky in names):
            raise DataError(f"--data {path}: has '{kx if kx in names else ky}' without "
                            f"'{ky if kx in names else kx}'")
        if kx in names:
            out[split] = (get(kx), get(ky))
    return out


@loader(".npz")
def load_npz(path: Path, options: dict[str, Any]) -> RawData:
    """Members stored uncompressed (``np.savez``) are memory-mapped where they sit
    in the file, so a large .npz costs page cache, not private memory, on the
    driver; compressed members (``np.savez_compressed``) are read."""
    with np.load(path, allow_pickle=False) as z:
        try:
            splits = _splits_from_mapping(lambda k: _npz_member(path, z, k), list(z.files), path)
        except ValueError as exc:  # object arrays need pickle: refused
            raise DataError(f"--data {path}: holds Python objects, which would need unpickling ({exc}); save "
                            "plain numeric or string arrays") from None
    return RawData(splits, {"format": "npz"})


def _npz_member(path: Path, z, key: str) -> np.ndarray:
    import zipfile

    info = z.zip.getinfo(f"{key}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        return z[key]
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)  # the local file header: its name and extra lengths may differ from the directory's
        start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
        fh.seek(start)
        version = np.lib.format.read_magic(fh)
        read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read is None:  # a format version this reader does not map: read the member
            return z[key]
        shape, fortran, dtype = read(fh)
        offset = fh.tell()
    if dtype.hasobject or not shape or 0 in shape:
        return z[key]
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


@loader(".pt", ".pth")
def load_pt(path: Path, options: dict[str, Any]) -> RawData:
    import pickle

    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise DataError(f"--data {path}: holds more than tensors (refused: loading it would unpickle code; "
                        f"{str(exc).splitlines()[0][:120]})") from None
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        obj = {"x": obj[0], "y": obj[1]}
    if not isinstance(obj, dict):
        raise DataError(f"--data {path}: expected a dict of tensors (x, y, ...) or an (x, y) pair, got "
                        f"{type(obj).__name__}")

    def get(k: str) -> np.ndarray:
        v = obj[k]
        if not isinstance(v, torch.Tensor):
            raise DataError(f"--data {path}: '{k}' is a {type(v).__name__}, not a tensor")
        return v.detach().cpu().numpy()

    return RawData(_splits_from_mapping(get, [str(k) for k in obj], path), {"format": "pt"})


def _table(frame, path: Path, options: dict[str, Any]) -> RawData:
    """Features and target of a data frame: numbers and booleans as float32,
    text columns one-hot encoded; the target column as it is."""
    import pandas as pd

    target = options.get("target")
    if not target:
        raise DataError(f"--data {path}: a table needs --target COLUMN (columns: {', '.join(map(str, frame.columns[:12]))})")
    if target not in frame.columns:
        raise DataError(f"--target {target}: no such column in {path.name}{did_you_mean(target, frame.columns)}")
    y = frame[target]
    if y.isna().any():
        raise DataError(f"--target {target}: {int(y.isna().sum())} rows have no target (first: row {int(np.argmax(y.isna().to_numpy()))})")
    features = frame.drop(columns=[target])
    if features.shape[1] == 0:
        raise DataError(f"--data {path}: no feature columns besides the target '{target}'")
    text = [c for c in features.columns if not (pd.api.types.is_numeric_dtype(features[c])
                                                or pd.api.types.is_bool_dtype(features[c]))]
    if text:
        features = pd.get_dummies(features, columns=text, dtype=np.float32)
    x = features.to_numpy(dtype=np.float32)
    yv = y.to_numpy()
    if yv.dtype == object:
        yv = yv.astype(str)
    return RawData({"train": (x, yv)}, {"format": path.suffix.lstrip("."), "target": target,
                                        "features": [str(c) for c in features.columns], "one_hot": [str(c) for c in text]})


@loader(".csv")
def load_csv(path: Path, options: dict[str, Any]) -> RawData:
    import pandas as pd

    return _table(pd.read_csv(path), path, options)


@loader(".parquet", ".pq")
def load_parquet(path: Path, options: dict[str, Any]) -> RawData:
    import pandas as pd

    return _table(pd.read_parquet(path), path, options)


@loader(FOLDER)
def load_folder(path: Path, options: dict[str, Any]) -> RawData:
    """A folder of .npy arrays (x.npy, y.npy [, x_val.npy, ...]) or of images."""
    if (path / "x.npy").is_file():
        return load_npy_folder(path, options)
    return load_image_folder(path, options)


def load_npy_folder(path: Path, options: dict[str, Any]) -> RawData:
    """x.npy, y.npy [, x_val.npy, y_val.npy, x_test.npy, y_test.npy]: inputs are
    memory-mapped (read where indexed: data larger than memory), targets loaded."""
    names = [f.stem for f in path.glob("*.npy")]

    def get(k: str) -> np.ndarray:
        return np.load(path / f"{k}.npy", mmap_mode="r" if k.startswith("x") else None, allow_pickle=False)

    return RawData(_splits_from_mapping(get, names, path), {"format": "npy folder (memory-mapped inputs)"})


def load_image_folder(path: Path, options: dict[str, Any]) -> RawData:
    """ROOT/<class>/*.png (or ROOT/train|val|test/<class>/*.png), decoded by Pillow
    into uint8 (N, C, H, W): greyscale when every image is, else RGB; images of
    another size are resized to the most common one (or ``image_size``)."""
    subdirs = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if subdirs and set(subdirs) <= {"train", "val", "test"} and "train" in subdirs:
        roots = {s: path / s for s in subdirs}
    else:
        roots = {"train": path}
    files = {split: _class_files(root) for split, root in roots.items()}
    from PIL import Image, UnidentifiedImageError

    def read(f: Path):
        try:
            with Image.open(f) as im:
                im.load()
                return im.copy()
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"--data {path}: cannot read image {f} ({exc})") from None

    images = {split: [(read(f), label) for f, label in fs] for split, fs in files.items()}
    every = [im for items in images.values() for im, _ in items]
    grey = all(im.mode in ("L", "1", "I;16", "I") for im in every)
    mode = "L" if grey else "RGB"
    size = tuple(options.get("image_size") or Counter(im.size for im in every).most_common(1)[0][0])
    splits = {}
    for split, items in images.items():
        arrays = []
        for im, _ in items:
            im = im.convert(mode)
            if im.size != size:
                im = im.resize(size, Image.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
            arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
        splits[split] = (np.stack(arrays), np.array([label for _, label in items]))
    resized = sum(im.size != size for im in every)
    return RawData(splits, {"format": "image folder", "mode": mode, "size": list(size), "resized": resized})


def _class_files(root: Path) -> list[tuple[Path, str]]:
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"--data {root}: a folder of images needs one subfolder per class")
    out = [(f, c.name) for c in classes for f in sorted(c.rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not out:
        raise DataError(f"--data {root}: no images ({', '.join(IMAGE_SUFFIXES[:4])}, ...) in its class subfolders")
    return out
