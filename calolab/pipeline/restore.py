"""Rebuild a tracked training from its MLflow run: config, data and best checkpoint.

``calolab evaluate run_id=...`` and ``calolab export run_id=...`` re-run a step of an
earlier training. The run's ``config.yaml`` artifact is the resolved config it trained with,
so the datamodule is rebuilt identically (same digest, usually a cache hit) and the task is
rebuilt from it before the checkpoint's weights are loaded (:meth:`~lightning_modules.task.Task.load_weights`,
whatever nets the task holds).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from calolab.keys import LAST_CHECKPOINT_NAME
from calolab.tracking import RunNotFoundError, TrackingStore

__all__ = ["RestoredRun", "RunNotFoundError", "best_checkpoint", "restore_run", "run_config"]


@dataclass
class RestoredRun:
    """A tracked training rebuilt: its config, its task (``model``) with the best weights, its data."""

    cfg: DictConfig
    model: object
    dm: object
    run_id: str
    experiment: str


def restore_run(run_id: str, store: TrackingStore, cfg: DictConfig | None = None) -> RestoredRun:
    """Load config and best checkpoint of ``run_id`` and rebuild data and model.

    ``cfg``: the run's config when the caller has already read it (:func:`run_config`).
    """
    from calolab.pipeline.samples import ensure_sample
    from calolab.pipeline.train import build_data, build_task

    client = store.client()
    run = _get_run(client, run_id, store)
    cfg = _config_artifact(client, run_id) if cfg is None else cfg
    with tempfile.TemporaryDirectory(prefix="calolab-restore-") as tmp:
        ckpt = best_checkpoint(client, run_id, tmp)
        ensure_sample(OmegaConf.to_container(cfg.generate) if cfg.get("generate") else None)
        dm = build_data(cfg)
        model = build_task(cfg, dm).load_weights(ckpt)
    experiment = client.get_experiment(run.info.experiment_id).name
    return RestoredRun(cfg=cfg, model=model, dm=dm, run_id=run_id, experiment=experiment)


def best_checkpoint(client, run_id: str, folder: str | Path) -> Path:
    """Download the run's ``checkpoints/`` into ``folder``; the best checkpoint there.

    The best is the ModelCheckpoint's file, not the latest training state (``last.ckpt``) that a
    resumable run also logs there; ``last.ckpt`` only when it is all the run has.

    Raises:
        RunNotFoundError: the run has no checkpoint.
    """
    from mlflow.exceptions import MlflowException

    try:
        ckpt_dir = client.download_artifacts(run_id, "checkpoints", str(folder))
        ckpts = sorted(Path(ckpt_dir).glob("*.ckpt"), key=lambda p: (p.name == LAST_CHECKPOINT_NAME, p.name))
    except (MlflowException, OSError):
        ckpts = []
    if not ckpts:
        raise RunNotFoundError(f"run {run_id} has no checkpoint artifact under checkpoints/")
    return ckpts[0]


def _get_run(client, run_id: str, store: TrackingStore):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as err:
        raise RunNotFoundError(f"no MLflow run {run_id!r} in {store.uri}") from err


def run_config(run_id: str, store: TrackingStore) -> DictConfig:
    """The resolved config ``run_id`` trained with (its ``config.yaml`` artifact)."""
    client = store.client()
    _get_run(client, run_id, store)
    return _config_artifact(client, run_id)


def _config_artifact(client, run_id: str) -> DictConfig:
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="calolab-config-") as tmp:
        try:
            cfg_path = client.download_artifacts(run_id, "config.yaml", tmp)
        except (MlflowException, OSError) as err:
            raise RunNotFoundError(f"run {run_id} has no config.yaml artifact (not a calolab training run?)") from err
        return OmegaConf.load(cfg_path)
