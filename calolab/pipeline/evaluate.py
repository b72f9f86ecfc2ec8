"""The evaluation step: score the test split and compare with the physics baselines.

Scores are computed by the trained net on the frozen test split of the datamodule (the same
events for every model with the same dataset digest). The comparison itself (ROC against the
cut-based working point and the shower-shape BDT, both tuned on the training split only,
efficiency at the baseline's rejection, binned efficiencies, pixel-output correlation maps)
lives in :mod:`calolab.evaluation`; this step runs it and logs metrics, tables and PNG plots
to the active MLflow run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from calolab.evaluation import evaluate_classifier


@torch.no_grad()
def predict_scores(
    net: torch.nn.Module, inputs: dict[str, np.ndarray], input_names: list[str], batch_size: int = 4096
) -> np.ndarray:
    """Sigmoid scores of ``net`` on arrays ``inputs`` (name -> (N, 1, H, W)), in eval mode."""
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    n = len(inputs[input_names[0]])
    out = np.empty(n, dtype=np.float32)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        xs = [torch.as_tensor(np.ascontiguousarray(inputs[k][start:stop]), device=device) for k in input_names]
        out[start:stop] = torch.sigmoid(net(*xs).float()).cpu().numpy()
    net.train(was_training)
    return out


def _split(a) -> dict[str, Any]:
    """Label, weight and aux arrays of a split, as calolab.evaluation takes them."""
    return {
        "label": np.asarray(a.label),
        "weight": np.asarray(a.weight),
        "aux": {k: np.asarray(v) for k, v in a.aux.items()},
    }


def evaluate_model(cfg: DictConfig, model, dm, out_dir: Path, log: bool = True) -> dict[str, float]:
    """Evaluate ``model`` on ``dm``'s test split; log metrics, tables and figures to MLflow."""
    out_dir.mkdir(parents=True, exist_ok=True)
    test_arrays = dm.arrays("test")
    score = predict_scores(model.net, test_arrays.inputs, dm.input_names, int(cfg.evaluation.batch_size))
    if not np.isfinite(score).all():
        from calolab.errors import CalolabError

        raise CalolabError(
            f"the network produced {int((~np.isfinite(score)).sum())} non-finite scores on the test split"
        )
    result = evaluate_classifier(
        score=score,
        test=_split(test_arrays),
        train=_split(dm.arrays("train")),
        out_dir=out_dir,
        title=str(cfg.experiment_name),
        inputs_for_maps={k: np.asarray(v) for k, v in test_arrays.inputs.items()}
        if cfg.evaluation.correlation_maps
        else None,
    )
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
