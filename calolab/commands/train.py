"""``calolab train``: one tracked training (``-m`` for sweeps); prints the run, its metrics with
their uncertainties (a bound as "> X"), the net-vs-baseline comparisons ("resolved" or not) and
how to open the MLflow UI on the store the run went to.

A training stopped by SIGTERM, SIGINT or SIGUSR1 (:mod:`calolab.pipeline.preemption`) prints one
line saying where it stopped and how to resume it, requeues its SLURM job after SIGUSR1, and exits
with 128 + the signal's number."""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from calolab.app import hydra_app
from calolab.evaluation.uncertainty import VS, comparison_lines, format_metric, is_uncertainty_key
from calolab.keys import HEADLINE_METRICS, TEST_AUC
from calolab.pipeline.preemption import Preempted, requeue_slurm_job
from calolab.pipeline.train import train
from calolab.ranks import is_main_process


@hydra_app("train", "train")
def main(cfg: DictConfig) -> float | list[float] | None:
    try:
        return _main(cfg)
    except Preempted as stopped:
        if is_main_process():
            print(f"calolab train: stopped by {stopped.describe()}{resume_hint(stopped)}", file=sys.stderr)
            requeued = requeue_slurm_job(stopped)
            if requeued:
                print(f"calolab train: {requeued}", file=sys.stderr)
        sys.exit(stopped.exit_code)


def resume_hint(stopped: Preempted) -> str:
    if stopped.hint:
        return f"; {stopped.hint}"
    if not stopped.run_id:
        return ""
    return f"; run {stopped.run_id} ended KILLED with its checkpoint: calolab train resume={stopped.run_id}"


def _main(cfg: DictConfig) -> float | list[float] | None:
    if cfg.get("sweep_trial"):  # a sweep trial: the optimised metric(s) go back to the sweeper
        from sweeps.trial import run_trial

        return run_trial(train, cfg)
    result = train(cfg)
    m = result["metrics"]
    if not is_main_process():  # DDP: rank 0 reports the one run
        return m.get(TEST_AUC)
    heading, hint = run_report(cfg, result)
    print(heading)
    print("\n".join(summary_lines(m)))
    print(hint)
    return m.get(TEST_AUC)


def headline(metrics: dict[str, float]) -> list[str]:
    """The metrics worth a line: the headline ones, the net at the baseline's working point, each baseline's AUC."""
    figures = {k for k in metrics if not is_uncertainty_key(k) and VS not in k}
    shown = [k for k in HEADLINE_METRICS if k in figures]
    shown += sorted(k for k in figures if k.startswith("test/eff_at_") and k not in shown)
    shown += sorted(k for k in figures if k.startswith("test/") and k.endswith("_auc") and k not in shown)
    return shown


def summary_lines(metrics: dict[str, float]) -> list[str]:
    """The end-of-run summary: each headline metric with its uncertainty, then the comparisons."""
    lines = [f"  {key:<36} {format_metric(metrics, key)}" for key in headline(metrics)]
    return lines + [f"  {line}" for line in comparison_lines(metrics)]


def run_report(cfg: DictConfig, result: dict) -> tuple[str, str]:
    """The run's heading (name, id, experiment, store without credentials) and the command or
    address that opens the MLflow UI on the store the run went to."""
    from calolab.tracking import TrackingStore, scrub_uri, ui_hint

    run_id = result["run_id"]
    store = TrackingStore.resolve(result["tracking_uri"], cfg.paths.mlruns_dir)
    try:
        info = store.client().get_run(run_id).info
    except Exception:  # the report is a courtesy: never fail a finished training over it
        info = None
    label = f"{info.run_name} ({run_id})" if info is not None and info.run_name else run_id
    heading = f"\nrun {label}, experiment {result['experiment']}, in {scrub_uri(store.uri)}"
    hint = ui_hint(store, experiment_id=info.experiment_id if info else None, run_id=run_id)
    return heading, hint


if __name__ == "__main__":
    main()
