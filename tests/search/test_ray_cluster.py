"""``archgram search --address`` joins a cluster started with ``ray start --head``.

The head runs with ``--block`` in its own session, so the test ends it by its
process group only (the brief's ``ray stop --force`` is not used): ``ray stop`` would stop every Ray on the machine, including
other searches and test runs.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from archgram.search.store import StudyStore

TINY = (Path(__file__).resolve().parents[1] / "data" / "tiny_conv.pcfg").read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _stop(proc: subprocess.Popen) -> None:
    """SIGKILL the head's process group: the throwaway cluster's services and
    workers all live in it (SIGTERM would drain for 30 s first)."""
    for sig, wait in ((signal.SIGKILL, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        time.sleep(1)
        alive = subprocess.run(["ps", "-o", "stat=", "-g", str(proc.pid)], capture_output=True, text=True).stdout
        if not [s for s in alive.split() if not s.startswith("Z")]:  # zombies are dead already
            return


@contextlib.contextmanager
def ray_head(tmp_path: Path):
    """A throwaway ``ray start --head --block`` cluster in its own session:
    yields (port, env for drivers joining it) and kills its process group after."""
    ray_bin = Path(sys.executable).with_name("ray")
    ray_cmd = [str(ray_bin)] if ray_bin.exists() else [sys.executable, "-m", "ray.scripts.scripts"]
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="agray", dir="/tmp")  # short: Ray's socket paths have a length limit
    # Ray >= 2.5x clusters use token auth; a driver joining by address must opt in. A
    # token of the test's own keeps it independent of ~/.ray/auth_token.
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    log = open(tmp_path / "head.log", "w")
    head = subprocess.Popen(
        [*ray_cmd, "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false",
         f"--temp-dir={temp}", "--disable-usage-stats", "--block"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
    )
    try:
        deadline = time.monotonic() + 90
        while not _listening(port):
            assert head.poll() is None, (tmp_path / "head.log").read_text()
            assert time.monotonic() < deadline, "ray start --head did not come up"
            time.sleep(0.5)
        yield port, env
    finally:
        _stop(head)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_search_joins_a_running_cluster(tmp_path):
    with ray_head(tmp_path) as (port, env):
        grammar = tmp_path / "tiny.pcfg"
        grammar.write_text(TINY)
        study = tmp_path / "cluster.db"
        run = subprocess.run(
            [sys.executable, "-m", "archgram.cli", "search", str(grammar), "--task", "digits", "--trials", "3",
             "--workers", "2", "--budget", "5steps", "--batch-size", "16", "--study", str(study),
             "--address", f"127.0.0.1:{port}", "--no-reference"],  # 5 steps cannot train the reference
            capture_output=True, text=True, timeout=300, env=env,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        records = StudyStore(study).records()
        assert len(records) == 3 and any(r.ok for r in records)
        bad = subprocess.run(
            [sys.executable, "-m", "archgram.cli", "search", str(grammar), "--task", "digits", "--trials", "4",
             "--study", str(study), "--address", f"127.0.0.1:{_free_port()}", "--no-reference"],
            capture_output=True, text=True, timeout=60, env=env,
        )
        assert bad.returncode == 2 and "no Ray cluster answers" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
        assert len(StudyStore(study).records()) == 3


@pytest.mark.slow
def test_search_on_data_joins_a_cluster_and_never_reads_the_drivers_file(tmp_path):
    """A data search joined to a cluster by --address: the file is deleted after
    the driver read it, so the cluster's workers can only train on the task that
    travelled through the object store."""
    with ray_head(tmp_path) as (port, env):
        (tmp_path / "tiny.pcfg").write_text(TINY)
        code = (
            "import numpy as np, pathlib, sys\n"
            "from archgram import api\n"
            "rng = np.random.default_rng(0)\n"
            "np.savez('d.npz', x=rng.integers(0, 256, (300, 8, 8), dtype=np.uint8), y=np.arange(300) % 3)\n"
            "req = api.prepare('tiny.pcfg', data='d.npz', trials=2, workers=2, budget='5steps', batch_size=16,\n"
            f"                  study='s.db', strategy='random', address='127.0.0.1:{port}', reference=False)\n"
            "pathlib.Path('d.npz').unlink()\n"
            "study = api.run(req)\n"
            "print(sorted(r.state for r in study.trials()))\n"
        )
        run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                             env=env)
        assert run.returncode == 0, run.stdout + run.stderr[-3000:]
        assert run.stdout.strip().splitlines()[-1] == "['COMPLETE', 'COMPLETE']", run.stdout
