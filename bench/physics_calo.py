"""Benchmark: pi0 / pi+- classification and cluster calibration on six barrel layers, with uncertainties.

Issue 16's pion studies (Cukierman et al.; caloml-atlas), run as a user runs them:

- ``pion_id``: each net option (``pion_dense``: flattened EMB2 + cluster energy; ``pion_cnn``: CNN
  on EMB2; ``pion_all_layers``: one branch per layer) trained by ``calolab train experiment=pion_id
  net=<net>`` on the same generated sample, against the EM-probability-like likelihood and the
  cluster-moment BDT of ``conf/evaluation/pion_id.yaml`` (fitted on the training split only), on
  the same test clusters: AUC and R50 = 1/eps_B at eps_S = 50%.
- ``cluster_calibration``: the regression (``--calib-net``) against the EM scale and the
  local-hadronic-style weighting of ``conf/evaluation/cluster_calibration.yaml``: median response
  and relative resolution IQR/2 / median overall and per truth-energy bin.

Every figure is the run's own test-split evaluation (as logged to MLflow in
``bench/results/mlflow.db``), with its uncertainty: the standard deviation of the evaluation's
seeded Poisson-bootstrap replicas over the test clusters (``bootstrap_seed`` of the evaluation
config, 0); differences net minus baseline use the same replicas for both (paired). Nothing is
tuned on the test split; only the sample size, epochs and seed are arguments.

    .venv/bin/python bench/physics_calo.py [--events 40000] [--epochs 8] [--seed 12345]
        [--nets pion_dense pion_cnn pion_all_layers] [--calib-net pion_all_layers] [--data-dir data/bench]

``--events`` pions (half pi0) are generated once into ``<data-dir>/pions-<events>-seed<seed>``
(~1000 pions/s per core) and reused by every training. The table is also written to
``bench/results/physics_calo.txt``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from calolab.app import compose_config  # noqa: E402
from calolab.pipeline.train import train  # noqa: E402

NETS = ("pion_dense", "pion_cnn", "pion_all_layers")
RESULTS = ROOT / "bench" / "results"
#: caloml-atlas: six-layer network vs the standard cluster EM probability (REFERENCE.md)
ANCHOR = "caloml-atlas anchor: six-layer net AUC ~0.986, EM probability ~0.951"


def _train(preset: str, net: str, args: argparse.Namespace) -> tuple[dict, float, dict]:
    db = RESULTS / "mlflow.db"
    data_dir = Path(args.data_dir).resolve()
    overrides = [
        f"experiment={preset}",
        f"net={net}",
        f"generate.n_events={args.events}",
        f"generate.out={data_dir}/pions-{args.events}-seed{args.seed}",
        f"generate.seed={args.seed}",
        "generate.chunk_size=2000",
        f"generate.workers={args.workers}",
        f"trainer.max_epochs={args.epochs}",
        f"seed={args.seed}",
        f"tracking.uri=sqlite:///{db}",
        f"paths.data_dir={data_dir}",
        f"run_name=bench-{preset}-{net}-{args.events}-seed{args.seed}",
    ]
    t0 = time.perf_counter()
    result = train(compose_config("train", overrides))
    seconds = time.perf_counter() - t0
    metrics = MlflowClient(tracking_uri=f"sqlite:///{db}").get_run(result["run_id"]).data.metrics
    return result, seconds, metrics


def _pm(m: dict, key: str, digits: int = 4) -> str:
    value, err = m.get(key, np.nan), m.get(f"{key}_err", np.nan)
    return f"{value:.{digits}f} +- {err:.{digits}f}"


def _rej(m: dict, key: str) -> str:
    value = m.get(key, np.nan)
    if m.get(f"{key}_is_bound", 0.0) == 1.0:
        return f"> {value:.0f} (bound)"
    lo, hi = m.get(f"{key}_err_lo", np.nan), m.get(f"{key}_err_hi", np.nan)
    return f"{value:.1f} -{lo:.1f} +{hi:.1f}"


def pion_id(args: argparse.Namespace) -> list[str]:
    rows, baseline_rows = [], None
    for net in args.nets:
        result, seconds, m = _train("pion_id", net, args)
        n = int(m.get("test/n_events", 0)) or "?"
        if baseline_rows is None:
            rows.append(
                f"pion_id: pions sample of {args.events} clusters (generate seed {args.seed}, half pi0), "
                f"test split {n} clusters, {args.epochs} epochs max, training seed {args.seed}; "
                "uncertainties: std of the evaluation's 1000 Poisson-bootstrap replicas (seed 0)"
            )
            rows.append(f"  {'discriminant':<36} {'AUC':>18} {'R50':>22}   {'net - EM prob. dAUC':>24}")
            baseline_rows = [
                f"  {'EM probability (likelihood)':<36} {_pm(m, 'test/em_prob_auc'):>18} {_rej(m, 'test/em_prob_rej50'):>22}",
                f"  {'cluster-moment BDT':<36} {_pm(m, 'test/bdt_auc'):>18} {_rej(m, 'test/bdt_rej50'):>22}",
            ]
        rows.append(
            f"  {net + f' ({seconds / 60:.1f} min)':<36} {_pm(m, 'test/auc'):>18} {_rej(m, 'test/rej50'):>22}   "
            f"{_pm(m, 'test/auc_vs_em_prob'):>24}"
        )
    rows += baseline_rows or []
    rows.append(f"  {ANCHOR}")
    return rows


def calibration(args: argparse.Namespace) -> list[str]:
    result, seconds, m = _train("cluster_calibration", args.calib_net, args)
    cfg = compose_config("train", ["experiment=cluster_calibration"])
    edges = list(cfg.evaluation.energy_bins)
    n = int(m.get("test/n_events", 0))
    rows = [
        f"cluster_calibration: same sample, net {args.calib_net}, {args.epochs} epochs max ({seconds / 60:.1f} min), "
        f"test split {n} clusters; uncertainties: std of {cfg.evaluation.bootstrap_replicas} Poisson-bootstrap "
        "replicas (seed 0); resolution = IQR/2 / median of E/E_true",
        f"  {'estimate':<36} {'median response':>18} {'resolution':>18}   {'net - this: d resolution':>26}",
    ]
    for name, label in (
        ("", f"network ({args.calib_net})"),
        ("em_scale_", "EM scale"),
        ("lcw_", "EM prob. x const/class"),
    ):
        diff = "" if not name else _pm(m, f"test/resolution_vs_{name[:-1]}")
        rows.append(
            f"  {label:<36} {_pm(m, f'test/{name}response', 3):>18} {_pm(m, f'test/{name}resolution', 3):>18}   {diff:>26}"
        )
    rows.append(
        "  network resolution per truth-energy bin [GeV]: "
        + ", ".join(
            f"{lo:g}-{hi:g}: {m.get(f'test/resolution_e{i}', np.nan):.3f}"
            for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:]))
        )
    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=40_000, help="pions in the sample (half pi0)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--workers", type=int, default=2, help="generator processes when the sample is missing")
    parser.add_argument("--nets", nargs="*", default=list(NETS), choices=NETS, help="pion_id nets (none: skip pion_id)")
    parser.add_argument("--calib-net", default="pion_all_layers", choices=NETS)
    parser.add_argument("--skip-calibration", action="store_true")
    parser.add_argument("--data-dir", default=str(ROOT / "data" / "bench"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    RESULTS.mkdir(parents=True, exist_ok=True)
    lines = pion_id(args) if args.nets else []
    print("\n".join(lines), flush=True)
    if not args.skip_calibration:
        rows = calibration(args)
        print("\n".join(rows), flush=True)
        lines += ["", *rows]
    (RESULTS / "physics_calo.txt").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
