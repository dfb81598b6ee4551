"""Start (or join) Ray and run a search's trials as one Ray Tune ``Tuner``.

The driver process owns the strategy and the study store; Ray workers only
evaluate (worker.py). The searcher (searcher.py) feeds the Tuner until the
study reaches its total; a heartbeat thread keeps this driver's running trials
marked alive meanwhile (claims.py).
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
from typing import Any

from archgram.errors import ArchgramError
from archgram.search.claims import keep_alive
from archgram.search.config import SearchConfig
from archgram.search.schedulers import SCHEDULERS
from archgram.search.worker import trainable

#: Ray Tune settings for many short trials; a user's environment wins.
_TUNE_ENV = {
    "RAY_DEDUP_LOGS": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # no per-trial CSV/JSON/TensorBoard files
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",  # failed results carry no score
    "TUNE_GLOBAL_CHECKPOINT_S": "600",  # the study store, not Tune's state, is what resumes
    "TUNE_WARN_THRESHOLD_S": "60",
}

#: Ray gives its raylet a fixed 30 s to register; on a loaded 2-core machine that
#: can pass, so a local start is tried this many times before giving up.
RAY_START_ATTEMPTS = 3


def ray_dir(url: str) -> str:
    """Ray Tune's scratch files go beside a SQLite study, else to a temp folder."""
    if url.startswith("sqlite:///"):
        return os.path.join(os.path.dirname(url[len("sqlite:///"):]), ".ray")
    return tempfile.mkdtemp(prefix="archgram-ray-")


def start_ray(ray, init: dict[str, Any], address: str | None) -> None:
    """ray.init, retrying a local start that timed out under load; one-line errors."""
    for attempt in range(1, RAY_START_ATTEMPTS + 1):
        try:
            ray.init(**init)
            return
        except ConnectionError as exc:
            raise ArchgramError(_join_error(address, exc)) from None
        except Exception as exc:
            if address or "timed out during startup" not in str(exc):
                raise
            ray.shutdown()
            if attempt == RAY_START_ATTEMPTS:
                raise ArchgramError(f"local Ray did not start in {attempt} tries (the machine may be overloaded): "
                                    f"{str(exc).splitlines()[0]}") from None
            time.sleep(2 * attempt)


def _join_error(address: str | None, exc: Exception) -> str:
    """Why joining a cluster failed; at an explicit address without RAY_AUTH_MODE,
    the likely cause: Ray 2.5x clusters use token auth by default, and a driver
    joining by address never sends a token unasked."""
    text = f"cannot join the Ray cluster at {address}: {exc}"
    if address and "RAY_AUTH_MODE" not in os.environ:
        text = (f"{text.splitlines()[0]} (if the cluster uses token authentication, export RAY_AUTH_MODE=token and "
                "its token as RAY_AUTH_TOKEN or in ~/.ray/auth_token)")
    return text


def _ray_init(config: SearchConfig) -> dict[str, Any]:
    """ray.init arguments: join ``config.address``, else a local Ray sized to the workers."""
    init: dict[str, Any] = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False}
    if config.address:
        init["address"] = config.address
    else:
        init["num_cpus"] = max(1, int(config.workers * config.cpus_per_trial))
        if config.gpus_per_trial:
            init["num_gpus"] = int(config.workers * config.gpus_per_trial)
    return init


def run_trials(config: SearchConfig, strategy, store, progress, remaining: int, on_update, task=None,
               limit=None) -> None:
    """Run ``remaining`` trials on Ray (a local one started here unless Ray runs
    or ``config.address`` names a cluster); ``task`` travels to the workers
    through Ray's object store (None: a multi-task search, tasks by name).
    ``limit`` (a TimeLimit): no trial starts after it; running ones end by it."""
    for key, value in _TUNE_ENV.items():
        os.environ.setdefault(key, value)
    import ray

    from archgram.search.searcher import ErrorLog, StrategySearcher

    started_here = not ray.is_initialized()
    if started_here:
        start_ray(ray, _ray_init(config), config.address)
    stop = threading.Event()
    searcher = None
    try:
        errors = ErrorLog()
        searcher = StrategySearcher(strategy, store, config, progress, remaining, on_update, errors, limit)
        threading.Thread(target=keep_alive, args=(store, searcher.running, stop), daemon=True).start()
        _tuner(config, searcher, errors, store.url, task).fit()
    finally:
        stop.set()
        if searcher is not None:
            searcher.close()
        if started_here:
            ray.shutdown()


def _tuner(config: SearchConfig, searcher, errors, url: str, task):
    from ray import tune

    resources = {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial}
    runnable = trainable if task is None else tune.with_parameters(trainable, task=task)
    return tune.Tuner(
        tune.with_resources(runnable, resources),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=SCHEDULERS[config.scheduler].build(config),
            num_samples=-1,
            max_concurrent_trials=config.workers,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=f"archgram-{os.getpid()}",
            storage_path=ray_dir(url),
            verbose=0,
            log_to_file=False,
            callbacks=[errors],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
        ),
    )
