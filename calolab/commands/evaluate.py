"""``calolab evaluate run_id=... [data.files=[...]]``: re-run the test evaluation of a run, or run it on other data.

Without ``data.files`` the run's own test split is evaluated again and logged to that run. The
training run keeps its status whatever happens: a failed or interrupted re-evaluation is recorded
on it as the tag ``calolab.reevaluation_error`` and the artifact ``reevaluation_error.txt`` (see
:class:`calolab.tracking.TrackedRun`).

With ``data.files`` (files, folders or globs; e.g. the jets ``calolab sample`` generated) the
training is evaluated on every event of those files with its own data config and preprocessing,
into a new run under the training (:mod:`calolab.pipeline.other_data`); the training run is not
touched, and its own test metrics are printed beside the new ones.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from calolab import keys
from calolab.app import hydra_app
from calolab.evaluation.uncertainty import format_metric
from calolab.pipeline.evaluate import evaluate_model
from calolab.pipeline.other_data import evaluate_other_data
from calolab.pipeline.restore import restore_run
from calolab.tracking import TrackedRun, TrackingStore
from calolab.tracking.run import sigterm_as_interrupt


@hydra_app("evaluate", "evaluate")
def main(cfg: DictConfig) -> None:
    store = TrackingStore.resolve(cfg.tracking.uri, cfg.paths.mlruns_dir)
    run_id = str(cfg.run_id)
    data = cfg.get("data") or {}
    if data.get("files") is not None:
        files = OmegaConf.to_container(data.files) if OmegaConf.is_list(data.files) else str(data.files)
        with sigterm_as_interrupt():
            new_run, metrics, own = evaluate_other_data(store, run_id, files, data.get("tree"))
        print(f"evaluated run {run_id} on {files} -> run {new_run}:")
        for k in sorted(metrics):
            print(f"  {k:<32} {metrics[k]:.4g}")
        if keys.TEST_AUC in metrics:
            print(f"AUC on these events: {format_metric(metrics, keys.TEST_AUC)}")
            if keys.TEST_AUC in own:
                print(f"AUC on the run's own test split: {format_metric(own, keys.TEST_AUC)}")
        return
    with sigterm_as_interrupt(), TrackedRun(store, run_id=run_id), tempfile.TemporaryDirectory() as tmp:
        restored = restore_run(run_id, store)  # inside: a run whose data are gone records why
        metrics = evaluate_model(restored.cfg, restored.model, restored.dm, Path(tmp))
    print(f"evaluated run {run_id}:")
    for k in sorted(metrics):
        print(f"  {k:<32} {metrics[k]:.4g}")


if __name__ == "__main__":
    main()
