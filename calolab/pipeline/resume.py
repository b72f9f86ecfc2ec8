"""``calolab train resume=<run_id>``: continue an interrupted training in the same MLflow run.

A training logs its full state (model, optimisers, loops, callbacks) to its run as
``checkpoints/last.ckpt`` at every epoch end and when a signal stops it
(:class:`calolab.callbacks.RunCheckpoint`). Resuming:

- checks the run can be resumed: KILLED or FAILED, or RUNNING with its process gone (the run's
  host and PID tags: on this host the PID is dead; on another host the heartbeat tag is older
  than :data:`STALE_S`); a FINISHED run, a live one and one without a checkpoint are refused with
  one clear error (:class:`ResumeError`);
- rebuilds the run's own configuration from its ``config.yaml`` artifact. The command line may
  only raise ``trainer.max_epochs`` / ``trainer.max_steps`` (and say where the store is); any other
  value that differs from the run's is refused, naming the key, the run's value and the given one;
- downloads the latest and the best checkpoints into the training's scratch folder, pointing the
  best-checkpoint callback's state at the new folder, so that ``Trainer.fit(ckpt_path=...)``
  continues where the run stopped with its best score and early-stopping patience intact;
- skips metric points the run already holds (:func:`logged_steps`): after ``kill -9`` the epoch
  in flight is trained again, and its metrics are not logged twice.

On SLURM a requeued job (``sbatch --requeue``) resumes by itself: a run is tagged with its job id
(:data:`calolab.keys.SLURM_JOB_TAG`) and :func:`requeued_run` finds it when the same job starts
again.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from calolab import keys
from calolab.errors import CalolabError
from calolab.pipeline.preemption import slurm_job_id
from calolab.procs import pid_alive
from calolab.tracking import RunNotFoundError, TrackingStore
from calolab.tracking.params import to_plain

log = logging.getLogger(__name__)

#: seconds between heartbeats of a training (``$CALOLAB_HEARTBEAT_S`` overrides)
HEARTBEAT_S = 60.0
#: a RUNNING run of another host is taken as dead after this long without a heartbeat (``$CALOLAB_HEARTBEAT_STALE_S``)
STALE_S = 600.0
#: the only settings a resume may change, and only upwards
RAISABLE = ("trainer.max_epochs", "trainer.max_steps")
#: where the run is (the store) and which run: not part of the training's configuration
LOCATING = ("resume", "tracking.uri", "paths.mlruns_dir")


class ResumeError(CalolabError, RuntimeError):
    """A run cannot be resumed (finished, still alive, no checkpoint) or not with the given settings."""


def _seconds(variable: str, default: float) -> float:
    try:
        return float(os.environ.get(variable) or default)
    except ValueError:
        return default


def process_tags() -> dict[str, str]:
    """The tags naming this training's process: host, PID, heartbeat and SLURM job (when in one)."""
    tags = {
        keys.HOST_TAG: socket.gethostname(),
        keys.PID_TAG: str(os.getpid()),
        keys.HEARTBEAT_TAG: f"{time.time():.0f}",
    }
    job = slurm_job_id()
    if job is not None:
        tags[keys.SLURM_JOB_TAG] = job
    return tags


class Heartbeat:
    """Refreshes the run's heartbeat tag every :data:`HEARTBEAT_S` from a daemon thread (``enabled``:
    the main process; the other DDP ranks write nothing)."""

    def __init__(self, store: TrackingStore, run_id: str, interval: float | None = None, enabled: bool = True):
        self.store, self.run_id, self.enabled = store, run_id, enabled
        self.interval = interval if interval is not None else _seconds("CALOLAB_HEARTBEAT_S", HEARTBEAT_S)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        if not self.enabled or not self.run_id:
            return self
        self._thread = threading.Thread(target=self._beat, name="calolab-run-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        client = self.store.client()
        while not self._stop.wait(self.interval):
            try:
                client.set_tag(self.run_id, keys.HEARTBEAT_TAG, f"{time.time():.0f}")
            except Exception as err:  # a busy store: the next beat (or the epoch end) refreshes it
                log.debug("heartbeat of run %s not recorded: %s", self.run_id, err)

    def __exit__(self, *exc) -> bool:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return False


def still_alive(run) -> str | None:
    """Why a RUNNING run's training is taken as alive (None: its process is gone)."""
    tags = run.data.tags
    host, pid, beat = tags.get(keys.HOST_TAG), tags.get(keys.PID_TAG, ""), tags.get(keys.HEARTBEAT_TAG)
    age = time.time() - float(beat) if beat and beat.replace(".", "", 1).isdigit() else None
    since = f"last heartbeat {age:.0f} s ago" if age is not None else "no heartbeat recorded"
    if host == socket.gethostname() and pid.isdigit():
        if int(pid) != os.getpid() and pid_alive(int(pid)):
            return f"its process {pid} on {host} is alive ({since})"
        return None
    if age is not None and age < _seconds("CALOLAB_HEARTBEAT_STALE_S", STALE_S):
        return f"its process {pid or '?'} on {host or '?'} is alive by its heartbeat ({since})"
    return None


def check_resumable(client, run) -> None:
    """Refuse a run that cannot be resumed: finished, still alive, or without a checkpoint."""
    run_id, status = run.info.run_id, run.info.status
    if status == "FINISHED":
        raise ResumeError(f"run {run_id} is FINISHED: nothing to resume (start a new training instead)")
    if status == "RUNNING":
        alive = still_alive(run)
        if alive:
            raise ResumeError(
                f"run {run_id} is still running: {alive}; a run is resumed once its process is gone "
                f"(stop it first: kill -TERM {run.data.tags.get(keys.PID_TAG, '<pid>')} logs a checkpoint)"
            )
    elif status not in ("KILLED", "FAILED"):
        raise ResumeError(f"run {run_id} is {status}: only a KILLED, FAILED or dead RUNNING run can be resumed")
    names = {Path(a.path).name for a in client.list_artifacts(run_id, keys.CHECKPOINT_DIR)}
    if keys.LAST_CHECKPOINT_NAME not in names:
        raise ResumeError(
            f"run {run_id} has no checkpoint to resume from ({keys.LAST_CHECKPOINT}): it stopped before "
            "its first epoch ended; start a new training instead"
        )


def requeued_run(store: TrackingStore, experiment: str) -> str | None:
    """In a SLURM job started again (``--requeue``): the unfinished run this job trained, if any.

    Found by the job-id tag in ``experiment``: a KILLED or RUNNING run, or a FAILED one once SLURM
    restarted the job (``SLURM_RESTART_COUNT`` > 0); a FINISHED run (the job had completed its
    training) is not resumed. None outside SLURM or when the job has no run yet.
    """
    job = slurm_job_id()
    if job is None:
        return None
    exp = store.client().get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = store.client().search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{keys.SLURM_JOB_TAG}` = '{job}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
    if not runs or runs[0].info.status == "FINISHED":
        return None
    if runs[0].info.status == "FAILED" and restarts in ("", "0"):  # a failed training, not a preempted job
        return None
    log.info("SLURM job %s (restart %s) resumes its run %s", job, restarts, runs[0].info.run_id)
    return runs[0].info.run_id


# -- the run's configuration ---------------------------------------------------------------------
def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: node}


def _located(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in LOCATING)


def _unbounded(value: Any) -> bool:
    return value is None or value == -1


def _raises(old: Any, new: Any) -> bool:
    """Whether ``new`` raises the limit ``old`` (None and -1 are no limit)."""
    if _unbounded(new):
        return not _unbounded(old)
    if _unbounded(old) or isinstance(new, bool) or not isinstance(new, int | float):
        return False
    return math.isfinite(new) and new > old


def _overridden_keys() -> set[str]:
    """The config keys the command line set explicitly (``key=value``, ``+key=``, ``++key=``)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return set()
    found = set()
    for text in HydraConfig.get().overrides.task:
        key = text.split("=", 1)[0].lstrip("+~")
        if "." in key and not key.startswith("hydra."):
            found.add(key)
    return found


def _touched_keys(cfg: DictConfig) -> set[str]:
    """The leaves the command line changed: where ``cfg`` differs from ``conf/train.yaml``'s defaults,
    and the keys it names explicitly."""
    from calolab.app import compose_config

    base = _flat(to_plain(compose_config("train", [])))
    now = _flat(to_plain(cfg))
    touched = {k for k in now.keys() | base.keys() if now.get(k) != base.get(k)}
    return {k for k in touched | _overridden_keys() if not _located(k)}


def resumed_config(cfg: DictConfig, logged: DictConfig, run_id: str) -> tuple[DictConfig, dict[str, tuple]]:
    """The run's logged config with the raised limits of ``cfg``; ResumeError naming every other change.

    Returns the config to train with and ``{key: (run's value, new value)}`` of the raised limits.
    """
    given, kept = _flat(to_plain(cfg)), _flat(OmegaConf.to_container(logged, resolve=True))
    raised, refused = {}, []
    for key in sorted(_touched_keys(cfg)):
        old, new = kept.get(key), given.get(key)
        if old == new:
            continue
        if key in RAISABLE and _raises(old, new):
            raised[key] = (old, new)
        else:
            refused.append(f"{key} (run {run_id} has {old!r}, but got {new!r})")
    if refused:
        raise ResumeError(
            f"resume={run_id}: a resumed run keeps its configuration, only {' and '.join(RAISABLE)} may be raised; "
            f"refused: {'; '.join(refused)}"
        )
    out = OmegaConf.create(OmegaConf.to_container(logged, resolve=True))
    OmegaConf.set_struct(out, False)
    for key, (_, new) in raised.items():
        OmegaConf.update(out, key, new, force_add=True)
    for key in LOCATING:  # where the store is comes from this command line, not from the logged (scrubbed) config
        value = OmegaConf.select(cfg, key, default=None)
        OmegaConf.update(out, key, value, force_add=True)
    OmegaConf.update(out, "resume", run_id, force_add=True)
    return out, raised


# -- checkpoints and metrics ---------------------------------------------------------------------
def _relocate(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str) and old and (value == old or value.startswith(old.rstrip("/") + "/")):
        return new + value[len(old.rstrip("/")) :]
    if isinstance(value, dict):
        return {_relocate(k, old, new): _relocate(v, old, new) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_relocate(v, old, new) for v in value)
    return value


def download_checkpoints(client, run_id: str, workdir: Path, ckpt_dir: Path) -> Path:
    """The run's latest checkpoint, ready for ``Trainer.fit(ckpt_path=...)``, with the run's other
    checkpoints (the best one) in ``ckpt_dir`` and the callbacks' paths pointing there."""
    import torch

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # batch logs: no tqdm bars
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    fetched = workdir / "resume"
    fetched.mkdir(parents=True, exist_ok=True)
    last = None
    for artifact in client.list_artifacts(run_id, keys.CHECKPOINT_DIR):
        name = Path(artifact.path).name
        if artifact.is_dir or not name.endswith(".ckpt"):
            continue
        local = Path(client.download_artifacts(run_id, artifact.path, str(fetched)))
        if name == keys.LAST_CHECKPOINT_NAME:
            last = local
        else:
            local.replace(ckpt_dir / name)
    if last is None:
        raise ResumeError(f"run {run_id} has no checkpoint to resume from ({keys.LAST_CHECKPOINT})")
    try:
        state = torch.load(last, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ResumeError(
            f"run {run_id}: its {keys.LAST_CHECKPOINT} cannot be read ({type(err).__name__}: {err}); "
            "was the training killed while logging it?"
        ) from err
    for key, cb_state in (state.get("callbacks") or {}).items():
        old = cb_state.get("dirpath") if isinstance(cb_state, dict) else None
        if old:  # Lightning's ModelCheckpoint: its best and last paths were in the interrupted run's scratch folder
            state["callbacks"][key] = _relocate(cb_state, str(old), str(ckpt_dir))
    path = workdir / "resume.ckpt"
    torch.save(state, path)
    return path


def logged_steps(client, run) -> dict[str, int]:
    """The last step logged of each of the run's metrics (points up to it are not logged again)."""
    return {
        key: max((m.step for m in client.get_metric_history(run.info.run_id, key)), default=-1)
        for key in run.data.metrics
    }


@dataclass
class ResumePlan:
    """What a resumed training needs: the run, the config to train with, what it raised and had logged."""

    run_id: str
    cfg: DictConfig
    raised: dict[str, tuple] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)
    resumes: int = 1

    def tags(self) -> dict[str, str]:
        tags = {keys.RESUMES_TAG: str(self.resumes), **process_tags()}
        if self.raised:
            tags[keys.RESUME_RAISED_TAG] = ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in self.raised.items())
        return tags


def plan_resume(cfg: DictConfig, store: TrackingStore, run_id: str, *, check: bool = True) -> ResumePlan:
    """Check ``run_id`` can be resumed with ``cfg`` (``check``: the main process) and build the plan."""
    import tempfile

    from mlflow.exceptions import MlflowException

    from calolab.tracking.params import scrub_uri

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one line on a refusal, no tqdm bars
    client = store.client()
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        raise RunNotFoundError(f"resume={run_id}: no MLflow run {run_id!r} in {scrub_uri(store.uri)}") from err
    if check:
        check_resumable(client, run)
    with tempfile.TemporaryDirectory(prefix="calolab-resume-") as tmp:
        try:
            logged = OmegaConf.load(client.download_artifacts(run_id, "config.yaml", tmp))
        except (MlflowException, OSError) as err:
            raise ResumeError(
                f"resume={run_id}: the run has no config.yaml artifact (not a calolab training?)"
            ) from err
    if logged.get("sweep_trial") or run.data.tags.get("optuna.study_name"):
        raise ResumeError(f"resume={run_id}: a sweep trial is retried by its sweep, not resumed on its own")
    new_cfg, raised = resumed_config(cfg, logged, run_id)
    resumes = int(run.data.tags.get(keys.RESUMES_TAG, "0") or 0) + 1
    return ResumePlan(run_id, new_cfg, raised, logged_steps(client, run) if check else {}, resumes)
