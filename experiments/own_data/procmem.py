"""Memory of a process tree, read from /proc (Linux): PSS (shared pages split
among the processes that map them, so the tree's sum counts each page once),
RSS and USS (private pages) per process, and the resident size of the /dev/shm
mapping (Ray's object store; every process maps the same file, so the node's
figure is the largest), sampled by a background thread."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(p.name))
    return kids


def tree(root: int) -> list[int]:
    kids, out, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def usage(pid: int) -> dict[str, float] | None:
    """{'pss', 'rss', 'uss'} in bytes, or None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    kb = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            kb[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return {"pss": kb.get("Pss", 0), "rss": kb.get("Rss", 0),
            "uss": kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0),
            "pss_anon": kb.get("Pss_Anon", 0), "pss_file": kb.get("Pss_File", 0), "pss_shmem": kb.get("Pss_Shmem", 0)}


def shared_store(pid: int) -> int:
    """Resident bytes of the process's /dev/shm mappings (Ray's object store)."""
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return 0
    total, inside = 0, False
    for line in text.splitlines():
        head = line.split()
        if not head:
            continue
        if "-" in head[0] and len(head) >= 5:  # a mapping's header line
            inside = len(head) >= 6 and head[5].startswith("/dev/shm")
        elif inside and head[0] == "Rss:":
            total += int(head[1]) * 1024
    return total


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def role(pid: int, root: int) -> str:
    if pid == root:
        return "driver"
    cmd = cmdline(pid)
    if "default_worker.py" in cmd or cmd.startswith("ray::"):
        return "worker"
    return "ray"  # gcs_server, raylet (holds the object store), dashboard agents...


class Sampler:
    """Peak memory of the tree under ``root`` by role, and per worker process."""

    def __init__(self, root: int | None = None, every: float = 0.5):
        self.root, self.every = root or os.getpid(), every
        self.peak: dict[str, float] = {}
        self.workers: dict[int, dict[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(self.every)

    def sample(self) -> None:
        totals: dict[str, float] = {"driver": 0, "ray": 0, "worker": 0}
        kinds: dict[str, float] = {"pss_anon": 0, "pss_file": 0, "pss_shmem": 0}
        store = 0
        for pid in tree(self.root):
            store = max(store, shared_store(pid))
            u = usage(pid)
            if u is None:
                continue
            r = role(pid, self.root)
            totals[r] += u["pss"]
            for k in kinds:
                kinds[k] += u[k]
            if r == "worker":
                w = self.workers.setdefault(pid, {"pss": 0, "rss": 0, "uss": 0})
                for k in w:
                    w[k] = max(w[k], u[k])
        totals["node"] = sum(totals.values())
        totals["ray_side"] = totals["ray"] + totals["worker"]
        totals["object_store_resident"] = store
        totals.update({f"node_{k}": v for k, v in kinds.items()})  # anonymous / file-backed (page cache) / shm
        for k, v in totals.items():
            self.peak[k] = max(self.peak.get(k, 0), v)
