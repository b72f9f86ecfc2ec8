"""Benchmark: the lambda trade-off of the adversarially decorrelated W taggers, R50 against 1/JSD.

For one preset (``adversarial_mass`` by default, or ``adversarial_pileup``) this trains the tagger
exactly as ``calolab train experiment=<preset> model.lam=<lambda>`` does, once per lambda (0, the
undecorrelated reference, and the others), each an MLflow run in ``bench/results/mlflow.db``;
restores each run's evaluated (last-epoch) classifier and scores the frozen test split. Printed
per lambda: AUC, R50 = 1/eps_B at eps_S = 50%, and 1/JSD of the background's decorrelation
variable (jet mass in 5 GeV bins, or mu) passing vs failing the 50% cut
(:func:`calolab.evaluation.decorrelation.inverse_jsd`, the figure the evaluation logs as
``test/inv_jsd50``), each with the standard deviation of seeded Poisson-bootstrap replicas over
the test jets, and the ratios to lambda = 0. Figures: R50 vs 1/JSD, and the background's
passing/failing distributions of each lambda next to lambda = 0
(``bench/results/adversarial_<preset>_*.png``); the table goes to
``bench/results/physics_adversarial_<preset>.txt``.

    .venv/bin/python bench/physics_adversarial.py [--preset adversarial_mass] [--events 100000]
        [--lambdas 0 1 10 100] [--epochs 20] [--replicas 1000] [--seed 12345] [--gen-seed 12345]
        [--data-dir data/bench] [--threads N] [--set key=value ...]

``--events`` is the generated sample size (half W, half QCD; per pileup condition for
``adversarial_pileup``); the default 100k jets is the issue's >= 50k per class. Samples go to
``<data-dir>/wjets-<events>-seed<gen-seed>`` (``-mu50`` beside it) when missing (the generator
runs ~10-25 jets/s per core) and are reused afterwards. ``--set`` passes further overrides to every
training (e.g. ``model.adversary_steps=10``).
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

from calolab.app import compose_config  # noqa: E402
from calolab.evaluation.bootstrap import bootstrap, spread  # noqa: E402
from calolab.evaluation.decorrelation import (  # noqa: E402
    DecorrelationSpec,
    background_histograms,
    bootstrap_inverse_jsd,
    inverse_jsd,
    plot_pass_fail,
    plot_rejection_vs_inverse_jsd,
    replica_spread,
)
from calolab.evaluation.metrics import auc, rejection_at_efficiency  # noqa: E402
from calolab.pipeline.restore import restore_run  # noqa: E402
from calolab.pipeline.train import train  # noqa: E402
from calolab.tracking import TrackingStore  # noqa: E402

PRESETS = ("adversarial_mass", "adversarial_pileup")
RESULTS = ROOT / "bench" / "results"


def train_lambda(lam: float, args: argparse.Namespace, out: Path) -> dict:
    """Train at ``lam``; return the test split's labels, weights, scores and aux of the evaluated model."""
    overrides = [
        f"experiment={args.preset}",
        f"model.lam={lam}",
        f"generate.n_events={args.events}",
        f"generate.seed={args.gen_seed}",
        f"generate.out={out}",
        "generate.chunk_size=1000",
        f"generate.workers={args.workers}",
        f"trainer.max_epochs={args.epochs}",
        f"seed={args.seed}",
        f"tracking.uri=sqlite:///{RESULTS / 'mlflow.db'}",
        f"paths.data_dir={Path(args.data_dir).resolve()}",
        f"run_name=bench-{args.preset}-lam{lam:g}-{args.events}-seed{args.seed}",
        *args.set,
    ]
    t0 = time.perf_counter()
    result = train(compose_config("train", overrides))
    return score_run(result["run_id"], time.perf_counter() - t0)


def score_run(run_id: str, seconds: float) -> dict:
    """Restore a finished run's evaluated classifier and score its test split."""
    restored = restore_run(run_id, TrackingStore.resolve(f"sqlite:///{RESULTS / 'mlflow.db'}", str(RESULTS)))
    dm, task = restored.dm, restored.model.cpu().eval()
    test = dm.arrays("test")
    return {
        "lam": float(restored.cfg.model.lam),
        "run_id": run_id,
        "seconds": seconds,
        "label": np.asarray(test.label),
        "weight": np.asarray(test.weight, dtype=np.float64),
        "score": task.predict(test.inputs, list(dm.input_names))["score"].astype(np.float64),
        "aux": {k: np.asarray(v) for k, v in test.aux.items()},
        "spec": DecorrelationSpec.from_config("val", dict(restored.cfg.model.decorrelation)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="adversarial_mass", choices=PRESETS)
    parser.add_argument("--events", type=int, default=100_000, help="generated jets (half per class)")
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 1.0, 10.0, 100.0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--replicas", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=12345, help="training seed and bootstrap seed")
    parser.add_argument("--gen-seed", type=int, default=12345, help="generator seed of the sample")
    parser.add_argument("--workers", type=int, default=2, help="generator processes when a sample is missing")
    parser.add_argument("--data-dir", default=str(ROOT / "data" / "bench"))
    parser.add_argument(
        "--out", default=None, help="the sample folder (default <data-dir>/wjets-<events>-seed<gen-seed>)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (1 on a shared CPU)")
    parser.add_argument("--set", nargs="*", default=[], help="further overrides of every training")
    parser.add_argument(
        "--from-runs",
        nargs="+",
        default=None,
        help="re-score these finished bench runs (one per lambda) instead of training",
    )
    args = parser.parse_args()
    if 0.0 not in args.lambdas:
        parser.error("--lambdas must include 0 (the undecorrelated reference)")
    if any(lam < 0 for lam in args.lambdas):
        parser.error(f"--lambdas must be >= 0, but got {args.lambdas}")
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = Path(args.out or Path(args.data_dir) / f"wjets-{args.events}-seed{args.gen_seed}").resolve()

    if args.from_runs:
        runs = dict(sorted((r["lam"], r) for r in (score_run(run_id, 0.0) for run_id in args.from_runs)))
        if 0.0 not in runs:
            parser.error("--from-runs must include a lambda = 0 run")
    else:
        runs = {lam: train_lambda(lam, args, out) for lam in sorted(args.lambdas)}
    ref = runs[0.0]
    y, w = ref["label"], ref["weight"]
    spec = ref["spec"]
    values = ref["aux"][spec.variable].astype(np.float64) * spec.scale
    scores = {lam: r["score"] for lam, r in runs.items()}
    for lam, r in runs.items():  # one test split: the same events in the same order for every lambda
        if not (np.array_equal(r["label"], y) and np.array_equal(r["aux"]["event_number"], ref["aux"]["event_number"])):
            raise SystemExit(f"lambda={lam:g}: the test split differs from lambda=0's")
    reps = bootstrap(
        y, {str(k): s for k, s in scores.items()}, w, replicas=args.replicas, seed=args.seed, efficiencies=(0.5,)
    )
    n_sig, n_bkg = int(y.sum()), int((1 - y).sum())
    rows = [
        f"{args.preset}: wjets sample of {args.events} jets per condition (generator seed {args.gen_seed}, {out}), "
        f"test split {y.size} jets ({n_sig} W, {n_bkg} QCD), {args.epochs} epochs, training seed {args.seed}",
        f"  decorrelation variable {spec.variable} (x{spec.scale:g}), bins {spec.bins}, cut at eps_S = {spec.eff_sig:g}; "
        f"uncertainties from {args.replicas} Poisson-bootstrap replicas (seed {args.seed}): std for AUC and R50, half the "
        f"central 68% interval for 1/JSD (heavy-tailed)",
        f"  overrides: {' '.join(args.set) or '-'}",
        f"  {'lambda':>8} {'AUC':>17} {'R50':>17} {'1/JSD':>17} {'R50/R50(0)':>11} {'1/JSD / (0)':>12}  run",
    ]
    points, table = [], {}
    for lam, s in scores.items():
        a, r50 = auc(y, s, w), rejection_at_efficiency(y, s, spec.eff_sig, w)
        ij = inverse_jsd(y, s, w, values, spec.eff_sig, spec.bins)
        ij_reps = bootstrap_inverse_jsd(
            y, s, w, values, spec.eff_sig, spec.bins, replicas=args.replicas, seed=args.seed
        )
        table[lam] = {
            "auc": a,
            "r50": r50,
            "r50_err": spread(reps[str(lam)]["rej50"]),
            "ij": ij,
            "ij_err": replica_spread(ij_reps),
        }
        points.append(
            {
                "name": f"$\\lambda$ = {lam:g}",
                "rej50": r50,
                "rej50_err": table[lam]["r50_err"],
                "inv_jsd": ij,
                "inv_jsd_err": table[lam]["ij_err"],
                "reference": lam == 0,
            }
        )
    for lam, t in table.items():
        rows.append(
            f"  {lam:8g} {t['auc']:.4f} +- {spread(reps[str(lam)]['auc']):.4f} {t['r50']:7.2f} +- {t['r50_err']:5.2f} "
            f"{t['ij']:7.2f} +- {t['ij_err']:5.2f} {t['r50'] / table[0.0]['r50']:11.2f} {t['ij'] / table[0.0]['ij']:12.2f}"
            f"  {runs[lam]['run_id']} ({runs[lam]['seconds'] / 60:.1f} min)"
        )
    stem = RESULTS / f"adversarial_{args.preset}"
    plot_rejection_vs_inverse_jsd(f"{stem}_r50_vs_inv_jsd.png", points, title=args.preset, n_events=y.size)
    p0, q0, edges = background_histograms(y, scores[0.0], w, values, spec.eff_sig, spec.bins)
    for lam, s in scores.items():
        if lam == 0:
            continue
        p, q, _ = background_histograms(y, s, w, values, spec.eff_sig, spec.bins)
        plot_pass_fail(
            f"{stem}_pass_fail_lam{lam:g}.png",
            [
                {"name": "$\\lambda$ = 0", "edges": edges, "passing": p0, "failing": q0, "inv_jsd": table[0.0]["ij"]},
                {
                    "name": f"$\\lambda$ = {lam:g}",
                    "edges": edges,
                    "passing": p,
                    "failing": q,
                    "inv_jsd": table[lam]["ij"],
                },
            ],
            xlabel="Jet mass [GeV]" if spec.variable == "jet_m" else r"Pileup $\mu$",
            title=args.preset,
            n_events=y.size,
        )
    text = "\n".join(rows)
    print(text)
    (RESULTS / f"physics_adversarial_{args.preset}.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
