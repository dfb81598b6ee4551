"""Which search driver runs a trial, and whether that driver is still alive.

Several drivers may share one study (two processes on one SQLite file, two
machines on one RDB URL). Each trial a driver starts carries its ``driver``
id (host, pid, process start time) and a ``heartbeat`` time the driver renews
while the trial runs. A RUNNING trial is interrupted, and counts for nothing,
only when its driver is gone: on this host, when no process with that pid and
start time exists; on another host, when its heartbeat is older than
``STALE_S``. Trials without a driver id (written by older versions, or by hand)
are taken as interrupted, as before.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

#: seconds between heartbeats of a driver's running trials
HEARTBEAT_S = 30.0
#: a trial of another host whose heartbeat is older than this is interrupted
STALE_S = 4 * HEARTBEAT_S


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), telling a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


HOST = socket.gethostname()


def this_driver() -> str:
    pid = os.getpid()
    return f"{HOST}:{pid}:{_start_time(pid) or 0}"


def alive(driver: str | None, heartbeat: float | None, now: float | None = None) -> bool:
    """Is the driver that started a RUNNING trial still running?"""
    if not driver:
        return False
    parts = driver.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    host, pid, started = parts[0], int(parts[1]), parts[2]
    if host == HOST:
        if not _pid_exists(pid):
            return False
        now_started = _start_time(pid)
        return now_started is None or started == "0" or now_started == started
    return heartbeat is not None and (now or time.time()) - float(heartbeat) < STALE_S
