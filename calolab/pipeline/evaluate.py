"""The evaluation step: the experiment's configured evaluation on the frozen test split, logged to MLflow.

``cfg.evaluation`` is a ``_target_`` config (``conf/evaluation/<name>.yaml``, chosen by the
experiment preset): an evaluator called as ``evaluator(task, dm, out_dir, title)`` that runs the
task on the test split through its :meth:`~lightning_modules.task.Task.predict` and returns an
:class:`~calolab.evaluation.EvaluationResult` and the task's outputs: a classifier's
(:class:`~calolab.evaluation.ClassifierEvaluation`) test scores, an array, logged as
``evaluation/test_scores.npy``; a generator's (:class:`~calolab.evaluation.generative.GeneratorEvaluation`)
named arrays (generated images and their classes), logged as ``evaluation/test_outputs.npz``.
This step instantiates it, and logs the metrics, the tables, the PNG plots and the outputs to the
active MLflow run (:func:`log_evaluation`, also used by :mod:`calolab.pipeline.other_data` for an
evaluation on other files). It knows nothing of photons, jets, baselines or GANs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig


def build_evaluation(cfg: DictConfig):
    """The experiment's evaluator, from ``cfg.evaluation``."""
    return instantiate(cfg.evaluation, _convert_="all")


def evaluate_model(cfg: DictConfig, task, dm, out_dir: Path, log: bool = True) -> dict[str, float]:
    """Evaluate ``task`` on ``dm``'s test split; log metrics, tables and figures to MLflow."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result, outputs = build_evaluation(cfg)(task, dm, out_dir, str(cfg.experiment_name))
    if log:
        return log_evaluation(result, outputs, out_dir)
    return finite_metrics(result)


def finite_metrics(result) -> dict[str, float]:
    """An evaluation result's metrics that have a value (a NaN is left out, not logged)."""
    return {k: float(v) for k, v in result.metrics.items() if np.isfinite(v)}


def log_evaluation(result, outputs, out_dir: Path) -> dict[str, float]:
    """Log an evaluator's result and outputs to the active MLflow run; returns the logged metrics."""
    import mlflow

    metrics = finite_metrics(result)
    mlflow.log_metrics(metrics)
    for path in result.figures.values():
        mlflow.log_artifact(str(path), "plots")
    mlflow.log_text(json.dumps(result.tables, indent=2, default=float), "evaluation/tables.json")
    if isinstance(outputs, Mapping):  # named outputs (a generator's images and classes)
        np.savez_compressed(out_dir / "test_outputs.npz", **{k: np.asarray(v) for k, v in outputs.items()})
        mlflow.log_artifact(str(out_dir / "test_outputs.npz"), "evaluation")
    else:
        np.save(out_dir / "test_scores.npy", outputs)
        mlflow.log_artifact(str(out_dir / "test_scores.npy"), "evaluation")
    return metrics
