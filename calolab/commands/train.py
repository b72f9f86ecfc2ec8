"""``calolab train``: one tracked training (``-m`` for sweeps); prints the run and its metrics."""

from __future__ import annotations

from omegaconf import DictConfig

from calolab.app import hydra_app
from calolab.pipeline.train import train

KEY_METRICS = (
    "test/auc",
    "test/rej50",
    "test/rej80",
    "test/eff_at_baseline_rej",
    "test/baseline_eff",
    "test/baseline_rej",
)


@hydra_app("train", "train")
def main(cfg: DictConfig) -> float | list[float] | None:
    if cfg.get("sweep_trial"):  # a sweep trial: the optimised metric(s) go back to the sweeper
        from sweeps.trial import run_trial

        return run_trial(train, cfg)
    result = train(cfg)
    m = result["metrics"]
    print(f"\nrun {result['run_id']} (experiment {result['experiment']}) in {result['tracking_uri']}")
    for key in KEY_METRICS:
        if key in m:
            print(f"  {key:<28} {m[key]:.4g}")
    print("open the MLflow UI with: make ui   (then http://127.0.0.1:5000)")
    return m.get("test/auc")


if __name__ == "__main__":
    main()
