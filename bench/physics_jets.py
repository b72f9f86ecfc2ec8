"""Benchmark: the jet-image taggers against their physics baselines on the same test jets, with uncertainties.

For each preset (``qg_cnn``, ``wtag_cnn``, ``wtag_maxout``) this trains the net exactly as
``calolab train experiment=<preset>`` does (generated sample, validation-selected checkpoint,
MLflow run in ``bench/results/mlflow.db``), restores the run's task with its best weights, fits
the preset's configured baselines (``conf/evaluation/<name>.yaml``) on the training split only,
and scores the frozen test split with all of them. AUC and R50 = 1/eps_B at eps_S = 50% are
printed side by side with their statistical uncertainties from a seeded Poisson bootstrap over
the test jets (:mod:`calolab.evaluation.bootstrap`; the same replicas for every discriminant, so
the net-minus-baseline differences carry their correlation). Nothing is tuned on the test split:
the presets' settings are used as committed; only the sample size, epochs and seed are arguments.

    .venv/bin/python bench/physics_jets.py [--events 100000] [--epochs 20] [--replicas 1000] [--seed 12345]
                                           [--presets qg_cnn wtag_cnn wtag_maxout] [--data-dir data/bench]

``--events`` is the sample size per preset (half signal, half background; the default is 50k jets
per class). Samples are generated into ``<data-dir>/<sample>-<events>`` when missing (the
generator runs ~10-30 jets/s per core) and reused afterwards. The table is also written to
``bench/results/physics_jets.txt``.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from calolab.app import compose_config  # noqa: E402
from calolab.evaluation.bootstrap import bootstrap, spread  # noqa: E402
from calolab.evaluation.metrics import auc, rejection_at_efficiency  # noqa: E402
from calolab.evaluation.report import rankable  # noqa: E402
from calolab.evaluation.uncertainty import verdict  # noqa: E402
from calolab.pipeline.evaluate import build_evaluation  # noqa: E402
from calolab.pipeline.restore import restore_run  # noqa: E402
from calolab.pipeline.train import train  # noqa: E402
from calolab.tracking import TrackingStore  # noqa: E402

PRESETS = ("qg_cnn", "wtag_cnn", "wtag_maxout")
RESULTS = ROOT / "bench" / "results"


def run_preset(preset: str, args: argparse.Namespace) -> list[str]:
    """Train ``preset``, score its test split with the net and every baseline, return the table rows."""
    probe = compose_config("train", [f"experiment={preset}"])
    sample = probe.generate.sample
    db = RESULTS / "mlflow.db"
    overrides = [
        f"experiment={preset}",
        f"generate.n_events={args.events}",
        f"generate.out={Path(args.data_dir).resolve()}/{sample}-{args.events}",
        "generate.chunk_size=1000",
        f"generate.workers={args.workers}",
        f"trainer.max_epochs={args.epochs}",
        f"seed={args.seed}",
        f"tracking.uri=sqlite:///{db}",
        f"paths.data_dir={Path(args.data_dir).resolve()}",
        f"run_name=bench-{preset}-{args.events}-seed{args.seed}",
    ]
    t0 = time.perf_counter()
    result = train(compose_config("train", overrides))
    seconds = time.perf_counter() - t0
    restored = restore_run(result["run_id"], TrackingStore.resolve(f"sqlite:///{db}", str(RESULTS)))
    dm, task = restored.dm, restored.model.cpu().eval()
    test, trn = dm.arrays("test"), dm.arrays("train")
    y, w = np.asarray(test.label), np.asarray(test.weight)
    scores = {"net": task.predict(test.inputs, list(dm.input_names))["score"].astype(np.float64)}
    labels = {"net": preset}
    train_aux = {k: np.asarray(v) for k, v in trn.aux.items()}
    test_aux = {k: np.asarray(v) for k, v in test.aux.items()}
    for b in build_evaluation(restored.cfg).baselines:
        b.fit(train_aux, np.asarray(trn.label), np.asarray(trn.weight))
        s = b.score(test_aux)
        if s is not None:
            scores[b.name], labels[b.name] = rankable(s), re.sub(r"[$\\{}]", "", b.label).replace("_", "")
    reps = bootstrap(y, scores, w, replicas=args.replicas, seed=args.seed, efficiencies=(0.5,))
    n_sig, n_bkg = int(y.sum()), int((1 - y).sum())
    rows = [
        f"{preset}: {sample} sample of {args.events} jets (seed {args.seed}), test split {y.size} jets "
        f"({n_sig} signal, {n_bkg} background), {args.epochs} epochs max, run {result['run_id']}, "
        f"{seconds / 60:.1f} min; uncertainties: std of {args.replicas} Poisson-bootstrap replicas",
        f"  {'discriminant':<34} {'AUC':>16} {'R50':>18}   {'net - this: dAUC':>22}",
    ]
    for name, s in scores.items():
        a = auc(y, s, w)
        r50 = rejection_at_efficiency(y, s, 0.5, w)
        reps_r = reps[name]["rej50"]
        unresolved = np.mean(~np.isfinite(reps_r))
        r_text = f"{r50:7.1f} +- {spread(reps_r):5.1f}" if unresolved < 0.05 else f"> {r50:7.1f} (bound)"
        if name == "net":
            diff = ""
        else:
            nominal, err = auc(y, scores["net"], w) - a, spread(reps["net"]["auc"] - reps[name]["auc"])
            diff = f"{nominal:+.4f} +- {err:.4f} ({verdict(nominal, err)})"
        rows.append(f"  {labels[name]:<34} {a:.4f} +- {spread(reps[name]['auc']):.4f} {r_text:>18}   {diff}")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="jets per sample (half per class)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--replicas", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--workers", type=int, default=2, help="generator processes when a sample is missing")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    parser.add_argument("--data-dir", default=str(ROOT / "data" / "bench"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    RESULTS.mkdir(parents=True, exist_ok=True)
    lines = []
    for preset in args.presets:
        rows = run_preset(preset, args)
        print("\n".join(rows), flush=True)
        lines += [*rows, ""]
    (RESULTS / "physics_jets.txt").write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
