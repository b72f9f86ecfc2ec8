"""The evaluation step: the experiment's configured evaluation on the frozen test split, logged to MLflow.

``cfg.evaluation`` is a ``_target_`` config (``conf/evaluation/<name>.yaml``, chosen by the
experiment preset): an evaluator called as ``evaluator(task, dm, out_dir, title)`` that scores the
test split through the task's :meth:`~lightning_modules.task.Task.predict` and returns an
:class:`~calolab.evaluation.EvaluationResult` and the scores. This step instantiates it, and logs
the metrics, the tables, the PNG plots and the test scores to the active MLflow run. It knows
nothing of photons, jets or baselines.
"""

from __future__ import annotations

import json
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
    result, score = build_evaluation(cfg)(task, dm, out_dir, str(cfg.experiment_name))
    metrics = {k: float(v) for k, v in result.metrics.items() if np.isfinite(v)}
    if log:
        import mlflow

        mlflow.log_metrics(metrics)
        for path in result.figures.values():
            mlflow.log_artifact(str(path), "plots")
        mlflow.log_text(json.dumps(result.tables, indent=2, default=float), "evaluation/tables.json")
        np.save(out_dir / "test_scores.npy", score)
        mlflow.log_artifact(str(out_dir / "test_scores.npy"), "evaluation")
    return metrics
