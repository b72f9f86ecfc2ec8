"""``calolab evaluate run_id=...``: re-run the test evaluation of a run and log it to that run."""

from __future__ import annotations

import tempfile
from pathlib import Path

from omegaconf import DictConfig

from calolab.app import hydra_app
from calolab.pipeline.evaluate import evaluate_model
from calolab.pipeline.restore import restore_run
from calolab.tracking import TrackedRun, TrackingStore


@hydra_app("evaluate", "evaluate")
def main(cfg: DictConfig) -> None:
    store = TrackingStore.resolve(cfg.tracking.uri, cfg.paths.mlruns_dir)
    restored = restore_run(str(cfg.run_id), store)
    with TrackedRun(store, restored.experiment, run_id=restored.run_id), tempfile.TemporaryDirectory() as tmp:
        metrics = evaluate_model(restored.cfg, restored.model, restored.dm, Path(tmp))
    print(f"evaluated run {restored.run_id}:")
    for k in sorted(metrics):
        print(f"  {k:<32} {metrics[k]:.4g}")


if __name__ == "__main__":
    main()
