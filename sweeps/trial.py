"""The trial side of a sweep: re-attach an Optuna trial in the training process.

The sweep loop passes ``+sweep_trial.study_name=... +sweep_trial.number=N
+sweep_trial.storage=... +sweep_trial.parent_run_id=...`` with each trial's overrides. The
training process (the sweep's own, or any other one a Hydra launcher picks) opens the storage,
loads the study with its pruner (kept in the study's user attributes), and gets back the trial
by number. :func:`run_trial` hands the training a :class:`TrialHandle`, the pipeline's
:class:`~calolab.pipeline.train.TrainingHooks` for a trial: the
:class:`~sweeps.pruning.PruningCallback`, a child MLflow run of the sweep's parent run
(:class:`TrialRun`), pruning after fit, and the objective value(s) returned to Hydra's sweeper.
The pipeline never imports the sweeps.

A trial stopped by a signal (SIGTERM, SIGINT, SIGUSR1: :mod:`calolab.pipeline.preemption`) logs its
checkpoint and ends its run KILLED like any training; :func:`run_trial` then records the trial FAIL
with the interruption as ``fail_reason`` and queues it again with the same parameters (Optuna's
retry callback, as the sweep does for the trials of a dead worker, :func:`sweeps.loop.recover_stale_trials`),
and the worker stops: the next ``calolab train -m`` on the study runs the retry first.
"""

from __future__ import annotations

import math
import os
import socket
import warnings
from dataclasses import dataclass, field
from typing import Any

import mlflow
import optuna
from omegaconf import DictConfig, open_dict
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from calolab.errors import CalolabError
from calolab.pipeline.preemption import Preempted
from calolab.pipeline.train import TrainingHooks
from calolab.ranks import is_main_process
from calolab.tracking import TrackedRun
from sweeps.errors import SweepError
from sweeps.pruners import make_pruner
from sweeps.pruning import PruningCallback
from sweeps.storage import MAX_RETRY, open_storage

TRIAL_KEY = "sweep_trial"
PROCESS_ATTR = "calolab.trial_process"
PARAM_COUNT = "model/n_params"  # an objective computed from the net, not logged per epoch


def this_process() -> str:
    """``<host>:<pid>``: how sweeps name a worker or trial process (a dead one is found by it)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class TrialFailed(RuntimeError):
    """A trial's training failed: recorded as FAIL, the sweep goes on (never a CalolabError,
    which would end the whole Hydra multirun with a one-line exit)."""


class TrialRun(TrackedRun):
    """The trial's MLflow run, a child of the sweep's parent run; a pruned trial ends KILLED with
    the tag ``optuna.state=PRUNED`` (MLflow has no PRUNED status), never FAILED."""

    def __init__(self, *args, handle: TrialHandle, **kwargs):
        super().__init__(*args, **kwargs)
        self.handle = handle
        self.tags.update(handle.tags())
        from calolab.tracking.naming import run_name

        # <experiment>-trial-<n>-<sampled values>-<time>-<suffix>: what differs, unique across studies
        sampled = [f"{key}={value}" for key, value in handle.trial.params.items()]
        self.run_name = self.run_name or run_name(self.experiment, trial=handle.number, overrides=sampled)

    def __enter__(self) -> TrialRun:
        super().__enter__()
        if not self.follower:  # DDP ranks other than 0 share rank 0's run and trial
            self.handle.trial.set_user_attr("mlflow_run_id", self.run_id)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.follower:
            return super().__exit__(exc_type, exc, tb)
        if exc_type is not None and issubclass(exc_type, optuna.TrialPruned):
            mlflow.set_tag("optuna.state", "PRUNED")
            mlflow.end_run("KILLED")
            return False
        try:
            mlflow.set_tag("optuna.state", "COMPLETE" if exc_type is None else "FAIL")
        except Exception:  # never mask the original error with a tracking error
            pass
        return super().__exit__(exc_type, exc, tb)


@dataclass
class TrialHandle(TrainingHooks):
    """An Optuna trial re-attached in the training process, with what the training needs."""

    study: optuna.Study
    trial: optuna.Trial
    metrics: list[str]
    parent_run_id: str | None
    callback: PruningCallback = field(init=False)

    def __post_init__(self):
        # single-objective trials report every epoch (also without a pruner: the dashboard's
        # intermediate-value plot, and a record to compare pruners on); Optuna cannot take more
        self.callback = PruningCallback(self.trial, self.metrics, report=len(self.metrics) == 1)

    run_class = TrialRun

    @property
    def callbacks(self) -> tuple[PruningCallback, ...]:
        return (self.callback,)

    def run_kwargs(self) -> dict[str, Any]:
        return {"handle": self}

    def after_fit(self) -> None:
        self.raise_if_pruned()  # ends the run KILLED, tagged optuna.state=PRUNED

    def result(self, metrics: dict[str, float], task) -> dict[str, Any]:
        return {"objective": self.objective(metrics, task)}

    @property
    def number(self) -> int:
        return self.trial.number

    def tags(self) -> dict[str, str]:
        tags = {"optuna.study_name": self.study.study_name, "optuna.trial_number": str(self.number)}
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        return tags

    def raise_if_pruned(self) -> None:
        if self.callback.pruned:
            raise optuna.TrialPruned(f"trial {self.number} pruned at epoch {self.callback.pruned_at}")

    def objective(self, metrics: dict[str, float], task) -> float | list[float]:
        """The objective value(s): the best per-epoch value of a validation metric (the evaluated
        checkpoint is the best one), else the evaluated metric, else the parameter count of the
        task's inference module (what is deployed)."""
        values = []
        for key, direction in zip(self.metrics, self.study.directions, strict=True):
            history = self.callback.history.get(key) or []
            if history:
                if not all(math.isfinite(v) for v in history):
                    values.append(math.nan)
                    continue
                best = max if direction == optuna.study.StudyDirection.MAXIMIZE else min
                values.append(best(history))
            elif key in metrics:
                values.append(float(metrics[key]))
            elif key == PARAM_COUNT:
                values.append(float(sum(p.numel() for p in task.inference_module().parameters())))
            else:
                known = sorted({*metrics, *self.callback.history, PARAM_COUNT})
                raise SweepError(f"the optimised metric {key!r} was not logged; available: {', '.join(known)}")
        return values[0] if len(values) == 1 else values


def attach_trial(cfg: DictConfig) -> TrialHandle | None:
    """The trial named by ``cfg.sweep_trial``, or None outside a sweep."""
    node = cfg.get(TRIAL_KEY)
    if not node:
        return None
    with open_dict(cfg):  # keep the storage URL (credentials) out of the run's params and config.yaml
        node = cfg.pop(TRIAL_KEY)
    storage = open_storage(str(node.storage))
    probe = optuna.load_study(study_name=str(node.study_name), storage=storage)
    pruner_spec = probe.user_attrs.get("calolab.pruner") or {}
    study = optuna.load_study(
        study_name=str(node.study_name),
        storage=storage,
        pruner=make_pruner(pruner_spec.get("name"), options=pruner_spec.get("options")),
    )
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study.study_name), int(node.number)
    )
    trial = optuna.Trial(study, trial_id)
    trial.set_user_attr(PROCESS_ATTR, this_process())  # the launcher's process
    return TrialHandle(
        study=study,
        trial=trial,
        metrics=list(study.user_attrs["calolab.metrics"]),
        parent_run_id=node.get("parent_run_id"),
    )


def run_trial(train, cfg: DictConfig) -> Any:
    """Run ``train(cfg, hooks=<the trial>)`` as a sweep trial and return its objective; a
    CalolabError becomes :class:`TrialFailed`, so that the sweep records the trial FAIL and goes on.
    A trial stopped by a signal is FAIL and queued again (:func:`fail_and_retry`); the signal's
    :class:`Preempted` stops the worker."""
    handle = None
    try:
        handle = attach_trial(cfg)
        result = train(cfg, hooks=handle)
    except CalolabError as err:
        reason = f"{type(err).__name__}: {err}"
    except Preempted as stopped:
        if handle is not None and is_main_process():
            checkpoint = f", checkpoint in run {stopped.run_id}" if stopped.run_id else ""
            retry = fail_and_retry(handle, f"interrupted by {stopped.describe()}{checkpoint}")
            queued = f"queued again as trial {retry}" if retry is not None else "not queued again (retries used up)"
            stopped.hint = (
                f"sweep trial {handle.number} failed and {queued}; the next `calolab train -m` on the study goes on"
            )
        raise
    else:
        return result["objective"]
    raise TrialFailed(reason)


def fail_and_retry(handle: TrialHandle, reason: str) -> int | None:
    """Record the trial FAIL with ``reason`` and queue it again with its parameters, up to
    ``MAX_RETRY`` times (the retry's system attributes ``failed_trial`` / ``retry_history`` name the
    original). Returns the retry's trial number, None when it was not queued."""
    study, storage, trial_id = handle.study, handle.study._storage, handle.trial._trial_id
    storage.set_trial_user_attr(trial_id, "fail_reason", reason[:2000])
    if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
        return None
    before = {t.number for t in study.get_trials(deepcopy=False)}
    with warnings.catch_warnings():  # the retry callback is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, storage.get_trial(trial_id))
    added = [t.number for t in study.get_trials(deepcopy=False) if t.number not in before]
    return added[0] if added else None
