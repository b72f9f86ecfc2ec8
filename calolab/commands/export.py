"""``calolab export run_id=...``: re-export a run's best checkpoint to ONNX, parity-checked."""

from __future__ import annotations

import tempfile
from pathlib import Path

from omegaconf import DictConfig

from calolab.app import hydra_app
from calolab.pipeline.export import export_model
from calolab.pipeline.restore import restore_run
from calolab.tracking import TrackedRun, TrackingStore


@hydra_app("export", "export")
def main(cfg: DictConfig) -> None:
    store = TrackingStore.resolve(cfg.tracking.uri, cfg.paths.mlruns_dir)
    restored = restore_run(str(cfg.run_id), store)
    with TrackedRun(store, restored.experiment, run_id=restored.run_id), tempfile.TemporaryDirectory() as tmp:
        export_model(restored.cfg, restored.model, restored.dm, Path(tmp))
    print(f"exported run {restored.run_id} to ONNX (parity checked) as artifact onnx/model.onnx")


if __name__ == "__main__":
    main()
