"""The export step: the task's inference module to ONNX with a dynamic batch axis, verified before logging.

The graph's inputs are the inference module's forward arguments in order: the datamodule's
inputs, unless the task names its own (:meth:`~lightning_modules.task.Task.inference_inputs`: a
generator takes ``latent`` and ``label``); its outputs are the task's
(:attr:`~lightning_modules.task.Task.output_names`). Metadata records input names and shapes, the
outputs, the task kind, the normalisation, the dataset and config digests, and whatever the task
adds (``export_metadata()``: a generator's latent size and classes). The parity check runs
onnxruntime against the task's own :meth:`~lightning_modules.task.Task.predict` on test events,
or on the task's fixed :meth:`~lightning_modules.task.Task.example_inputs` (a generator: fixed
latents, so that generated images are compared); the model is logged only when it passes
(tolerances from ``conf/export``, which the registry's parity gate reads back from the run's config).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

import calolab
from calolab import keys
from calolab.export.onnx import check_parity, export_onnx
from calolab.tracking.params import to_plain


def config_digest(cfg: DictConfig) -> str:
    text = OmegaConf.to_yaml(OmegaConf.create(to_plain(cfg)), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def parity_reference(task, input_names: list[str]):
    """PyTorch's side of the parity check: the task's ``predict`` on arrays in graph order."""
    return lambda arrays: task.predict(dict(zip(input_names, arrays, strict=True)), input_names)


def export_inputs(task, dm, n: int) -> tuple[list[str], dict, list[np.ndarray]]:
    """Graph input names, per-event shapes and the (at most ``n``) parity events, as the task says."""
    own = task.inference_inputs()
    if own is None:
        names = list(dm.input_names)
        test = dm.arrays("test").inputs
        n = min(n, len(test[names[0]]))
        return names, dict(dm.input_shapes), [np.ascontiguousarray(test[k][:n]) for k in names]
    examples = task.example_inputs(n)
    return list(own), dict(own), [np.ascontiguousarray(examples[k]) for k in own]


def export_model(cfg: DictConfig, task, dm, out_dir: Path, log: bool = True) -> Path:
    """Export ``task``'s inference module to ``out_dir/model.onnx``, check parity on test events, log it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = dm.preprocessing_summary()
    metadata = {
        "calolab_version": calolab.__version__,
        "experiment": str(cfg.experiment_name),
        "dataset_digest": dm.digest,
        "config_digest": config_digest(cfg),
        "normalisation": json.dumps(summary.get("normalisation")),
        "task": task.kind,
    }
    if summary.get("standardisation") is not None:  # per-pixel means/stds the inputs must be standardised with
        metadata["standardisation"] = json.dumps(summary["standardisation"])
    extra = getattr(task, "export_metadata", None)
    metadata.update(extra() if extra is not None else {})
    task = task.cpu().eval()
    names, shapes, inputs = export_inputs(task, dm, int(cfg.export.parity_events))
    path = export_onnx(
        task.inference_module(),
        names,
        shapes,
        out_dir / "model.onnx",
        output_names=task.output_names,
        output_doc=task.output_doc,
        metadata=metadata,
        opset=cfg.export.opset,
    )
    reference = parity_reference(task, names)
    max_diff = check_parity(path, reference, inputs, atol=float(cfg.export.atol), rtol=float(cfg.export.rtol))
    if log:
        import mlflow

        mlflow.log_metric(keys.EXPORT_MAX_DIFF, float(max_diff))
        mlflow.log_artifact(str(path), "onnx")
    return path
