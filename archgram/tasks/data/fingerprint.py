"""Content hashes of a data set, stored with the study so that export, analyze
and a resumed search can prove they rebuilt the same data, and say which array
changed when they did not."""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

CHUNK_BYTES = 1 << 24  # hash 16 MB of rows at a time: no copy of a large array


def array_sha256(a: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes (row-major order)."""
    h = hashlib.sha256(f"{a.dtype.str}|{tuple(a.shape)}|".encode())
    if a.dtype.kind in "OUS":  # strings: hash their text, never a pickle
        for v in a.reshape(-1):
            h.update(str(v).encode() + b"\0")
        return h.hexdigest()
    rows = max(1, CHUNK_BYTES // max(1, a[:1].nbytes)) if len(a) else 1
    for i in range(0, len(a), rows):
        h.update(np.ascontiguousarray(a[i:i + rows]).tobytes())
    return h.hexdigest()


def fingerprint(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """{'sha256': over all arrays, 'arrays': {name: {'sha256', 'shape', 'dtype'}}}."""
    per = {name: {"sha256": array_sha256(a), "shape": list(a.shape), "dtype": a.dtype.str}
           for name, a in sorted(arrays.items())}
    whole = hashlib.sha256("".join(f"{k}={v['sha256']};" for k, v in per.items()).encode()).hexdigest()
    return {"sha256": whole, "arrays": per}


def changes(stored: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints, one phrase per array ([] if equal)."""
    if stored.get("sha256") == now.get("sha256"):
        return []
    old, new = stored.get("arrays", {}), now.get("arrays", {})
    out = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a is None:
            out.append(f"{name} is new")
        elif b is None:
            out.append(f"{name} is gone")
        elif a["shape"] != b["shape"]:
            out.append(f"{name} shape {tuple(a['shape'])} -> {tuple(b['shape'])}")
        elif a["dtype"] != b["dtype"]:
            out.append(f"{name} dtype {a['dtype']} -> {b['dtype']}")
        elif a["sha256"] != b["sha256"]:
            out.append(f"{name} contents (sha256 {a['sha256'][:12]} -> {b['sha256'][:12]})")
    return out or ["contents"]
