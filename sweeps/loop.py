"""The sweep loop: validate everything, then ask -> launch (through Hydra's launcher) -> tell.

One call is one worker's part of a study: it creates or loads the study (several workers and
repeated invocations share it through the storage; each adds its own ``n_trials``), first fails
and re-queues trials that a killed worker left RUNNING, then launches ``n_jobs`` trials at a
time. A trial that raises or returns NaN/inf is FAIL with the reason in the trial's user
attribute ``fail_reason``; the sweep stops once more than ``max_failure_rate * n_trials`` of its
trials failed.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from calolab.errors import ConfigError
from calolab.tracking import TrackingStore
from sweeps.errors import SweepError
from sweeps.pruners import make_pruner
from sweeps.report import ParentRun
from sweeps.samplers import make_sampler
from sweeps.space import override, parse_space
from sweeps.storage import open_storage, redact
from sweeps.trial import TRIAL_KEY

log = logging.getLogger(__name__)
WORKER_ATTR = "calolab.worker"
DIRECTIONS = ("maximize", "minimize")


@dataclass
class SweepSettings:
    """``hydra.sweeper`` (see ``hydra_plugins/calolab_sweeper``); key names follow the stock
    Optuna sweeper's where they exist."""

    metric: Any = "val/auc"
    direction: Any = "maximize"
    sampler: str = "tpe"
    sampler_options: dict = field(default_factory=dict)
    pruner: str | None = "median"
    pruner_options: dict = field(default_factory=dict)
    n_trials: int = 20
    n_jobs: int = 1
    timeout: float | None = None
    study_name: str | None = None
    storage: str | None = None
    max_failure_rate: float = 0.5
    seed: int | None = None
    params: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, node: Any) -> SweepSettings:
        plain = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
        plain = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v for k, v in plain.items()}
        plain = {k: v for k, v in plain.items() if not k.startswith("_")}
        return cls(**plain)

    def objectives(self) -> tuple[list[str], list[str]]:
        metrics = [self.metric] if isinstance(self.metric, str) else list(self.metric or [])
        directions = [self.direction] if isinstance(self.direction, str) else list(self.direction or [])
        if len(directions) == 1 and len(metrics) > 1:
            directions *= len(metrics)
        if not metrics or len(metrics) != len(directions):
            raise ConfigError(
                f"hydra.sweeper: one direction per metric, but got metric={metrics} and direction={directions}"
            )
        bad = [d for d in directions if d not in DIRECTIONS]
        if bad:
            raise ConfigError(f"hydra.sweeper.direction must be maximize or minimize, but got {bad[0]!r}")
        return metrics, directions

    def check(self) -> None:
        if not isinstance(self.n_trials, int) or self.n_trials < 1:
            raise ConfigError(f"hydra.sweeper.n_trials must be a positive integer, but got n_trials={self.n_trials!r}")
        if not isinstance(self.n_jobs, int) or self.n_jobs < 1:
            raise ConfigError(f"hydra.sweeper.n_jobs must be a positive integer, but got n_jobs={self.n_jobs!r}")
        if not 0 <= self.max_failure_rate <= 1:
            raise ConfigError(
                f"hydra.sweeper.max_failure_rate must be between 0 and 1, but got max_failure_rate={self.max_failure_rate}"
            )
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"hydra.sweeper.timeout must be positive (or null), but got timeout={self.timeout}")


def fixed_overrides(arguments: Sequence[str]) -> list[str]:
    """The command line's overrides, passed to every trial; sweep syntax is refused (the search
    space belongs in ``hydra.sweeper.params``)."""
    for parsed in OverridesParser.create().parse_overrides(list(arguments)):
        if parsed.is_sweep_override():
            raise ConfigError(
                f"{parsed.input_line!r}: the calolab sweeper takes its search space from hydra.sweeper.params, "
                "not from sweep overrides on the command line"
            )
    return list(arguments)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_stale_trials(study: optuna.Study) -> int:
    """Fail trials left RUNNING by a dead worker and queue them again (same params).

    RDB storages do it by heartbeat (any host); the journal file, which has no heartbeat, by
    checking whether the worker process recorded on the trial is still alive on this host.
    """
    if isinstance(study._storage, RDBStorage) and study._storage.get_heartbeat_interval():
        before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        optuna.storages.fail_stale_trials(study)
        after = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        return len(before - after)
    host, n = socket.gethostname(), 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker_host, _, pid = str(t.user_attrs.get(WORKER_ATTR, "")).rpartition(":")
        if worker_host != host or not pid.isdigit() or _alive(int(pid)):
            continue
        study._storage.set_trial_user_attr(t._trial_id, "fail_reason", f"worker {host}:{pid} died")
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        retries = int(t.user_attrs.get("calolab.retries", 0))
        if retries < 2:
            study.enqueue_trial(t.params, user_attrs={"calolab.retries": retries + 1, "calolab.retry_of": t.number})
        n += 1
    return n


@contextmanager
def heartbeat(storage: optuna.storages.BaseStorage, trials: list[optuna.Trial]):
    """Record the in-flight trials' heartbeats (RDB storages) while they run."""
    interval = storage.get_heartbeat_interval() if isinstance(storage, RDBStorage) else None
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat():
        while True:
            for t in trials:
                storage.record_heartbeat(t._trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name="calolab-sweep-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def tell(study: optuna.Study, trial: optuna.Trial, ret: Any, n_objectives: int) -> optuna.trial.FrozenTrial:
    """Tell the trial's outcome: PRUNED, FAIL (an exception or a non-finite value) or COMPLETE."""
    try:
        value = ret.return_value
    except optuna.TrialPruned:
        return study.tell(trial, state=TrialState.PRUNED)
    except Exception as err:
        trial.set_user_attr("fail_reason", f"{type(err).__name__}: {err}"[:2000])
        return study.tell(trial, state=TrialState.FAIL)
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    try:
        values = [float(v) for v in values]
        ok = len(values) == n_objectives and all(math.isfinite(v) for v in values)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        trial.set_user_attr("fail_reason", f"the trial returned {value!r}, expected {n_objectives} finite value(s)")
        return study.tell(trial, state=TrialState.FAIL)
    return study.tell(trial, values if n_objectives > 1 else values[0])


def open_study(settings: SweepSettings, config: DictConfig) -> tuple[optuna.Study, str, list[str], dict]:
    """Validate the settings and create or load the study; nothing runs before this passed."""
    settings.check()
    metrics, directions = settings.objectives()
    space = parse_space(settings.params, config)
    sampler = make_sampler(
        settings.sampler, seed=settings.seed, n_objectives=len(metrics), options=settings.sampler_options
    )
    pruner_name = settings.pruner if len(metrics) == 1 else "none"
    if len(metrics) > 1 and str(settings.pruner).lower() not in ("none", "nop", "null"):
        raise ConfigError(
            f"hydra.sweeper.pruner: a multi-objective study cannot prune, set pruner=none, but got {settings.pruner!r}"
        )
    pruner = make_pruner(pruner_name, options=settings.pruner_options)
    study_name = settings.study_name or config.get("experiment_name")
    if not study_name:
        raise ConfigError("hydra.sweeper.study_name is not set (and no experiment_name to default to)")
    spec = settings.storage or os.path.join(str(config.hydra.sweep.dir), "optuna.journal")
    storage = open_storage(spec)
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        sampler=sampler,
        pruner=pruner,
        directions=directions,
        load_if_exists=True,
    )
    if [d.name.lower() for d in study.directions] != directions:
        raise SweepError(
            f"study {study_name!r} in {redact(spec)} optimises {study.directions}, but got direction={directions}"
        )
    known = study.user_attrs.get("calolab.metrics")
    if known is not None and list(known) != metrics:
        raise SweepError(f"study {study_name!r} in {redact(spec)} optimises {known}, but got metric={metrics}")
    study.set_user_attr("calolab.metrics", metrics)
    study.set_user_attr("calolab.pruner", {"name": pruner_name, "options": dict(settings.pruner_options or {})})
    return study, spec, metrics, space


def run_sweep(
    settings: SweepSettings,
    config: DictConfig,
    launch: Callable[[list[list[str]], int], Sequence[Any]],
    arguments: Sequence[str],
) -> list[Any]:
    """One worker's part of the study in ``settings``; returns the Hydra job returns."""
    fixed = fixed_overrides(arguments)
    study, spec, metrics, space = open_study(settings, config)
    store = TrackingStore.resolve(config.tracking.uri, config.paths.mlruns_dir)
    recovered = recover_stale_trials(study)
    if recovered:
        log.warning("study %s: %d trial(s) of a dead worker failed and queued again", study.study_name, recovered)
    parent = ParentRun(store, str(config.experiment_name), study, spec)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    log.info(
        "study %s in %s: %d trial(s), parent run %s", study.study_name, redact(spec), settings.n_trials, parent.run_id
    )
    returns, n_done, n_failed, start = [], 0, 0, time.monotonic()
    allowed_failures = int(settings.max_failure_rate * settings.n_trials)
    status = "FAILED"
    try:
        while n_done < settings.n_trials:
            if settings.timeout is not None and time.monotonic() - start > settings.timeout:
                log.info(
                    "study %s: timeout of %s s reached after %d trial(s)", study.study_name, settings.timeout, n_done
                )
                break
            trials = []
            for _ in range(min(settings.n_jobs, settings.n_trials - n_done)):
                with warnings.catch_warnings():  # heartbeat used outside study.optimize: we beat ourselves
                    warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
                    trial = study.ask(space)
                trial.set_user_attr(WORKER_ATTR, worker)
                trials.append(trial)
            batch = [
                [
                    *fixed,
                    *(override(path, trial.params[path]) for path in space),
                    f"+{TRIAL_KEY}.study_name={_quote(study.study_name)}",
                    f"+{TRIAL_KEY}.number={trial.number}",
                    f"+{TRIAL_KEY}.storage={_quote(spec)}",
                    f"+{TRIAL_KEY}.parent_run_id={parent.run_id}",
                    f"hydra.sweep.subdir=trial_{trial.number}",
                ]
                for trial in trials
            ]
            with heartbeat(study._storage, trials):
                rets = launch(batch, trials[0].number)
            for trial, ret in zip(trials, rets, strict=True):
                frozen = tell(study, trial, ret, len(metrics))
                parent.trial_told(study, study._storage.get_trial(trial._trial_id))
                log.info("trial %d: %s %s", frozen.number, frozen.state.name, frozen.values or "")
                n_failed += frozen.state == TrialState.FAIL
            returns.extend(rets)
            n_done += len(trials)
            if n_failed > allowed_failures:
                raise SweepError(
                    f"study {study.study_name}: {n_failed} of {n_done} trials failed, more than "
                    f"max_failure_rate={settings.max_failure_rate} of n_trials={settings.n_trials}; last reason: "
                    f"{study._storage.get_trial(trials[-1]._trial_id).user_attrs.get('fail_reason', '?')}"
                )
        status = "FINISHED"
    finally:
        parent.finish(study, metrics, status)
    return returns


def _quote(text: str) -> str:
    return "'" + str(text).replace("\\", "\\\\").replace("'", "\\'") + "'"
