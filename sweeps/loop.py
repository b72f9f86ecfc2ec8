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
from hydra.core.utils import JobStatus
from omegaconf import DictConfig, OmegaConf
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat  # the heartbeat API has no public base class
from optuna.trial import TrialState

from calolab import keys
from calolab.errors import ConfigError
from calolab.procs import pid_alive
from calolab.secrets import mask, stash
from calolab.tracking import TrackingStore
from calolab.tracking.hydra_job import multirun_tags
from sweeps.errors import SweepError
from sweeps.pruners import make_pruner
from sweeps.report import PARENT_ATTR, ParentRun, close_dead_runs
from sweeps.samplers import make_sampler
from sweeps.space import fixed_overrides, parse_space
from sweeps.storage import GRACE_S, HEARTBEAT_S, MAX_RETRY, open_storage, redact
from sweeps.trial import TRIAL_KEY, this_process

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
    heartbeat_interval: int = HEARTBEAT_S
    grace_period: int = GRACE_S
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
        for key in ("heartbeat_interval", "grace_period"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"hydra.sweeper.{key} must be a positive number of seconds, but got {key}={value!r}")
        if self.grace_period <= self.heartbeat_interval:
            raise ConfigError(
                "hydra.sweeper.grace_period must exceed heartbeat_interval (else live trials look dead), but got "
                f"grace_period={self.grace_period}, heartbeat_interval={self.heartbeat_interval}"
            )
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"hydra.sweeper.timeout must be positive (or null), but got timeout={self.timeout}")


def _heartbeat_interval(storage: optuna.storages.BaseStorage) -> int | None:
    """The storage's heartbeat interval (RDB storages, also behind Optuna's cache), else None."""
    return storage.get_heartbeat_interval() if isinstance(storage, BaseHeartbeat) else None


def _stale_trial_ids(study: optuna.Study) -> dict[int, str]:
    """RUNNING trials whose worker is gone, with the reason: by heartbeat on an RDB storage (any
    host), by the recorded worker PID on this host for a journal file (which has no heartbeat)."""
    storage = study._storage
    interval = _heartbeat_interval(storage)
    if interval:
        grace = getattr(getattr(storage, "_backend", storage), "grace_period", None) or 2 * interval
        return {i: f"no heartbeat for over {grace} s" for i in storage._get_stale_trial_ids(study._study_id)}
    host, stale = socket.gethostname(), {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker_host, _, pid = str(t.user_attrs.get(WORKER_ATTR, "")).rpartition(":")
        if worker_host == host and pid.isdigit() and not pid_alive(int(pid)):
            stale[t._trial_id] = "its process is gone"
    return stale


def recover_stale_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Fail the trials a dead worker left RUNNING (reason in ``fail_reason``) and queue each again
    with the same parameters, up to ``MAX_RETRY`` times (Optuna's retry callback: the retry's
    system attributes ``failed_trial`` / ``retry_history`` name the original). Returns the failed
    trials; a trial another worker recovers first is left to it."""
    failed = []
    with warnings.catch_warnings():  # the retry callback is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
        for trial_id, why in _stale_trial_ids(study).items():
            trial = study._storage.get_trial(trial_id)
            reason = f"worker {trial.user_attrs.get(WORKER_ATTR, '?')} died: {why}"
            try:
                study._storage.set_trial_user_attr(trial_id, "fail_reason", reason)
                if not study._storage.set_trial_state_values(trial_id, TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker failed it first
            frozen = study._storage.get_trial(trial_id)
            retry(study, frozen)
            failed.append(frozen)
    return failed


@contextmanager
def heartbeat(storage: optuna.storages.BaseStorage, trials: list[optuna.Trial]):
    """Record the in-flight trials' heartbeats (RDB storages) while they run."""
    interval = _heartbeat_interval(storage)
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


def _outcome(ret: Any) -> tuple[Any, Exception | None]:
    """A job's return value, or the exception it raised. A failed Hydra JobReturn holds its
    exception: it is taken as is, since reading ``.return_value`` would log every pruned trial as
    "Error executing job"."""
    if getattr(ret, "status", None) == JobStatus.FAILED:
        return None, ret._return_value
    try:
        return ret.return_value, None
    except Exception as err:
        return None, err


def tell(study: optuna.Study, trial: optuna.Trial, ret: Any, n_objectives: int) -> optuna.trial.FrozenTrial:
    """Tell the trial's outcome: PRUNED, FAIL (an exception or a non-finite value) or COMPLETE."""
    value, err = _outcome(ret)
    if isinstance(err, optuna.TrialPruned):
        return study.tell(trial, state=TrialState.PRUNED)
    if err is not None:
        trial.set_user_attr("fail_reason", mask(f"{type(err).__name__}: {err}")[:2000])
        return study.tell(trial, state=TrialState.FAIL)
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    try:
        values = [float(v) for v in values]
        ok = len(values) == n_objectives and all(math.isfinite(v) for v in values)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        trial.set_user_attr(
            "fail_reason", mask(f"the trial returned {value!r}, expected {n_objectives} finite value(s)")
        )
        return study.tell(trial, state=TrialState.FAIL)
    return study.tell(trial, values if n_objectives > 1 else values[0])


def _check_space_against_study(study: optuna.Study, space: dict, spec: str) -> None:
    """A study keeps each dimension's kind and a categorical's choices (Optuna refuses to change
    them mid-study, after the first trial would have started); ranges may move."""
    seen: set[str] = set()
    for trial in study.get_trials(deepcopy=False):
        for path, old in trial.distributions.items():
            if path in seen or path not in space:
                continue
            seen.add(path)
            try:
                optuna.distributions.check_distribution_compatibility(old, space[path])
            except ValueError as err:
                raise SweepError(
                    f"study {study.study_name!r} in {redact(spec)} searched {path} as {old}, but got {space[path]} "
                    f"({err}); keep it, or start a new study with hydra.sweeper.study_name=<new name>"
                ) from err


def open_study(
    settings: SweepSettings, config: DictConfig, arguments: Sequence[str] = ()
) -> tuple[optuna.Study, str, list[str], dict]:
    """Validate the settings and create or load the study; nothing runs before this passed."""
    settings.check()
    metrics, directions = settings.objectives()
    space = parse_space(settings.params, config, arguments)
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
    storage = open_storage(spec, heartbeat_s=settings.heartbeat_interval, grace_s=settings.grace_period)
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
    _check_space_against_study(study, space, spec)
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
    study, spec, metrics, space = open_study(settings, config, arguments)
    fixed = fixed_overrides(arguments)
    store = TrackingStore.resolve(config.tracking.uri, config.paths.mlruns_dir)
    recovered = recover_stale_trials(study)
    for trial in recovered:
        log.warning(
            "study %s: trial %d failed (%s), queued again",
            study.study_name,
            trial.number,
            trial.user_attrs["fail_reason"],
        )
    close_dead_runs(store.client(), recovered)
    # the trials get the storage without its password (printed in the launch lines, saved in each
    # trial's overrides.yaml): a PostgreSQL password goes to this process's pgpass file, which the
    # trial processes inherit through PGPASSFILE (calolab.secrets)
    handoff = stash(spec, option="hydra.sweeper.storage")
    # the sweep directory every trial run is tagged with (keys.MULTIRUN_TAG), on the parent run too
    sweep_tags = {k: v for k, v in multirun_tags(config.hydra).items() if k == keys.MULTIRUN_TAG}
    parent = ParentRun(store, str(config.experiment_name), study, spec, tags=sweep_tags)
    worker = this_process()
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
                    trial = study.ask()
                    space.sample(trial)
                trial.set_user_attr(WORKER_ATTR, worker)
                trial.set_user_attr(PARENT_ATTR, parent.run_id)
                trials.append(trial)
            batch = [
                [
                    *fixed,
                    *space.overrides(trial.params),
                    f"+{TRIAL_KEY}.study_name={_quote(study.study_name)}",
                    f"+{TRIAL_KEY}.number={trial.number}",
                    f"+{TRIAL_KEY}.storage={_quote(handoff)}",
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
