"""The export step: ONNX with a dynamic batch axis, verified with onnxruntime before logging.

The graph's inputs are the net's forward arguments in order (the datamodule's input names);
metadata records input names and shapes, the normalisation, the dataset and config digests.
The parity check runs onnxruntime and PyTorch on test events; the model is logged only when
it passes (tolerances from ``conf/export``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

import calolab
from calolab.export.onnx import check_parity, export_onnx
from calolab.tracking.params import to_plain


def config_digest(cfg: DictConfig) -> str:
    text = OmegaConf.to_yaml(OmegaConf.create(to_plain(cfg)), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def export_model(cfg: DictConfig, model, dm, out_dir: Path, log: bool = True) -> Path:
    """Export ``model.net`` to ``out_dir/model.onnx``, check parity on test events, log it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = dm.preprocessing_summary()
    metadata = {
        "calolab_version": calolab.__version__,
        "experiment": str(cfg.experiment_name),
        "dataset_digest": dm.digest,
        "config_digest": config_digest(cfg),
        "normalisation": json.dumps(summary.get("normalisation")),
    }
    net = model.net.cpu().eval()
    path = export_onnx(
        net, list(dm.input_names), dm.input_shapes, out_dir / "model.onnx", metadata=metadata, opset=cfg.export.opset
    )
    test = dm.arrays("test").inputs
    n = min(int(cfg.export.parity_events), len(test[dm.input_names[0]]))
    inputs = [np.ascontiguousarray(test[k][:n]) for k in dm.input_names]
    max_diff = check_parity(path, net, inputs, atol=float(cfg.export.atol), rtol=float(cfg.export.rtol))
    if log:
        import mlflow

        mlflow.log_metric("export/onnx_max_abs_diff", float(max_diff))
        mlflow.log_artifact(str(path), "onnx")
    return path
