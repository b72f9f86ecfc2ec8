"""``calolab export run_id=...``: re-export a run's best checkpoint to ONNX, parity-checked.

The training run keeps its status whatever happens: a failed or interrupted export is recorded
on it as the tag ``calolab.reevaluation_error`` and the artifact ``reevaluation_error.txt``
(see :class:`calolab.tracking.TrackedRun`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from omegaconf import DictConfig

from calolab.app import hydra_app
from calolab.pipeline.export import export_model
from calolab.pipeline.restore import restore_run
from calolab.tracking import TrackedRun, TrackingStore
from calolab.tracking.run import sigterm_as_interrupt


@hydra_app("export", "export")
def main(cfg: DictConfig) -> None:
    store = TrackingStore.resolve(cfg.tracking.uri, cfg.paths.mlruns_dir)
    run_id = str(cfg.run_id)
    with sigterm_as_interrupt(), TrackedRun(store, run_id=run_id), tempfile.TemporaryDirectory() as tmp:
        restored = restore_run(run_id, store)  # inside: a run whose data are gone records why
        export_model(restored.cfg, restored.model, restored.dm, Path(tmp))
    print(f"exported run {run_id} to ONNX (parity checked) as artifact onnx/model.onnx")


if __name__ == "__main__":
    main()
