"""``calolab train``: compose -> sample -> data -> net -> fit -> evaluate -> export, all tracked.

One MLflow run per training (rank 0 only): the flattened resolved config as params, the full
config as ``config.yaml``, tags for git commit, dataset digest and calolab version, per-epoch
metrics through Lightning's MLflow logger, then the test metrics and plots, the best
checkpoint, the PyTorch model and the ONNX model (logged only after its onnxruntime parity
check passed). A failure anywhere ends the run FAILED with the reason recorded.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import calolab
from calolab.app import ROOT_DIR
from calolab.errors import ConfigError
from calolab.pipeline.evaluate import evaluate_model
from calolab.pipeline.export import export_model
from calolab.pipeline.samples import ensure_sample
from calolab.tracking import TrackedRun, TrackingStore, flatten_config
from calolab.tracking.git import git_state
from calolab.tracking.params import to_plain


def build_data(cfg: DictConfig):
    """Instantiate and prepare the datamodule (reads ROOT only when the cache is missing)."""
    dm = instantiate(cfg.data, _convert_="all")
    dm.prepare_data()
    dm.setup("fit")
    return dm


def build_model(cfg: DictConfig, dm) -> pl.LightningModule:
    """The LightningModule around a net whose input shapes come from the data."""
    net = instantiate(cfg.net, input_shapes=dm.input_shapes, _convert_="all")
    return instantiate(cfg.model, net=net, _convert_="all")


def run_tags(cfg: DictConfig, dm, experiment: str) -> dict[str, str]:
    tags = {
        "calolab.version": calolab.__version__,
        "calolab.experiment": experiment,
        "dataset.digest": dm.digest,
        "mlflow.source.name": "calolab train",
        **git_state(ROOT_DIR),
    }
    tags["mlflow.source.git.commit"] = tags["git.commit"]
    return tags


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one training as configured; return the run id and final metrics."""
    experiment = cfg.get("experiment_name")
    if not experiment:
        raise ConfigError("experiment_name is not set: choose a preset, e.g. `calolab train experiment=photon_id`")
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    ensure_sample(OmegaConf.to_container(cfg.generate, resolve=True) if cfg.get("generate") else None)
    dm = build_data(cfg)
    model = build_model(cfg, dm)
    store = TrackingStore.resolve(cfg.tracking.uri, cfg.paths.mlruns_dir)
    trial = _sweep_trial(cfg)  # None unless this training is a sweep trial
    run_cls, run_kw = (TrackedRun, {}) if trial is None else (trial.run_class, {"handle": trial})
    with run_cls(store, experiment, run_name=cfg.get("run_name"), tags=run_tags(cfg, dm, experiment), **run_kw) as run:
        import mlflow

        mlflow.log_params(flatten_config(cfg))
        mlflow.log_text(OmegaConf.to_yaml(OmegaConf.create(to_plain(cfg))), "config.yaml")
        mlflow.log_dict(dm.preprocessing_summary(), "data/preprocessing.json")
        with tempfile.TemporaryDirectory(prefix="calolab-train-") as tmp:
            extra = [] if trial is None else [trial.callback]
            trainer = build_trainer(cfg, store, run.run_id, Path(tmp), extra_callbacks=extra)
            trainer.fit(model, datamodule=dm)
            if trial is not None:
                trial.raise_if_pruned()  # ends the run KILLED, tagged optuna.state=PRUNED
            best = _best_checkpoint(trainer)
            if trainer.is_global_zero:
                if best is not None:
                    model = type(model).load_from_checkpoint(best, net=model.net, weights_only=False)
                    mlflow.log_artifact(best, "checkpoints")
                metrics = evaluate_model(cfg, model, dm, Path(tmp) / "evaluation")
                onnx_path = export_model(cfg, model, dm, Path(tmp) / "onnx")
                if cfg.tracking.log_models:
                    _log_models(model, onnx_path)
            else:  # pragma: no cover - other DDP ranks
                metrics = {}
        result = {"run_id": run.run_id, "experiment": experiment, "tracking_uri": store.uri, "metrics": metrics}
        if trial is not None:
            result["objective"] = trial.objective(metrics, model)
        return result


def _sweep_trial(cfg: DictConfig):
    """The Optuna trial this training runs as (``+sweep_trial.*`` overrides), or None."""
    if not cfg.get("sweep_trial"):
        return None
    from sweeps.trial import attach_trial

    return attach_trial(cfg)


def build_trainer(
    cfg: DictConfig, store: TrackingStore, run_id: str, workdir: Path, extra_callbacks: list | None = None
) -> pl.Trainer:
    """Trainer from ``conf/trainer`` with the run's MLflow logger and the configured callbacks."""
    from pytorch_lightning.loggers import MLFlowLogger

    logger = MLFlowLogger(tracking_uri=store.uri, run_id=run_id, log_model=False)
    callbacks = [instantiate(c, _convert_="all") for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks += extra_callbacks or []
    for cb in callbacks:  # checkpoints go to the run's scratch folder, then to MLflow
        if isinstance(cb, pl.callbacks.ModelCheckpoint) and cb.dirpath is None:
            cb.dirpath = str(workdir / "checkpoints")
    return instantiate(cfg.trainer, logger=logger, callbacks=callbacks, default_root_dir=str(workdir), _convert_="all")


def _best_checkpoint(trainer: pl.Trainer) -> str | None:
    cb = trainer.checkpoint_callback
    path = getattr(cb, "best_model_path", "") if cb is not None else ""
    return path if path and os.path.exists(path) else None


def _log_models(model: pl.LightningModule, onnx_path: Path) -> None:
    """The net in the mlflow.pytorch flavor and the verified ONNX file in the mlflow.onnx flavor."""
    import mlflow
    import onnx

    net = model.net.eval().cpu()
    # pickle: the multi-input net is loadable wherever calolab is installed (MLflow's pt2 format
    # accepts only single-tensor signatures); ONNX is the framework-free deployment format
    with warnings.catch_warnings():  # MLflow's pyfunc type-hint inference on nn.Module.forward(*inputs)
        warnings.filterwarnings("ignore", message=".*type hint is inferred as AnyType.*", category=UserWarning)
        mlflow.pytorch.log_model(
            net, name="pytorch", serialization_format="pickle", pip_requirements=["torch", "calolab"]
        )
    mlflow.onnx.log_model(
        onnx.load(str(onnx_path)), name="onnx", pip_requirements=["onnxruntime"], save_as_external_data=False
    )
