"""``calolab evaluate run_id=...``: re-run the test evaluation of a run and log it to that run.

The training run keeps its status whatever happens: a failed or interrupted re-evaluation is
recorded on it as the tag ``calolab.reevaluation_error`` and the artifact
``reevaluation_error.txt`` (see :class:`calolab.tracking.TrackedRun`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from omegaconf import DictConfig

from calolab.app import hydra_app
from calolab.pipeline.evaluate import evaluate_model
from calolab.pipeline.restore import restore_run
from calolab.tracking import TrackedRun, TrackingStore
from calolab.tracking.run import sigterm_as_interrupt


@hydra_app("evaluate", "evaluate")
def main(cfg: DictConfig) -> None:
    store = TrackingStore.resolve(cfg.tracking.uri, cfg.paths.mlruns_dir)
    run_id = str(cfg.run_id)
    with sigterm_as_interrupt(), TrackedRun(store, run_id=run_id), tempfile.TemporaryDirectory() as tmp:
        restored = restore_run(run_id, store)  # inside: a run whose data are gone records why
        metrics = evaluate_model(restored.cfg, restored.model, restored.dm, Path(tmp))
    print(f"evaluated run {run_id}:")
    for k in sorted(metrics):
        print(f"  {k:<32} {metrics[k]:.4g}")


if __name__ == "__main__":
    main()
