"""Benchmark: HealthyNN vs MixtureNN (Belfkir) on the same out-of-sample mixture, per cluster category.

Issue 16's "healthy vs mixed clusters" comparison, run as a user runs it: one photon sample with
30% unhealthy clusters (``photon_id_mixture``'s generation at ``--events``), on which
``calolab train experiment=photon_id_mixture`` (MixtureNN: trained on the mixture) and
``experiment=photon_id_healthy`` (HealthyNN: trained and validated on its healthy clusters only,
``data.train_selection``) are trained with the presets' settings; only the sample size, epochs and
seed are arguments. Both runs are restored from MLflow with their best weights and score the SAME
test events (checked by event number): the whole mixture and each category of the preset's
``evaluation.subsets`` (healthy, unhealthy). Per category: each net's AUC and signal efficiency at
the cut-based working point's background rejection in that category, the difference
MixtureNN - HealthyNN, and whether it is resolved (> 2 sigma, :data:`~calolab.evaluation.uncertainty.RESOLVED_SIGMA`).

Fixed references, so that both nets are measured with one yardstick: the test weights and the
cut-based working point are the mixture run's (its datamodule's test weights, whose pT/|eta|
reweighting is fitted on the mixture's training split; the cuts fitted on that training split as
its evaluation does). The healthy run's own logged ``test/...`` metrics use its own reweighting and
cuts (fitted on healthy clusters) and differ slightly. Uncertainties: the standard deviation of
seeded Poisson-bootstrap replicas over the category's test events, the same replicas for both
nets (:func:`calolab.evaluation.bootstrap.bootstrap`), so the difference carries their correlation.
Nothing is tuned on the test split.

The table goes to stdout, ``bench/results/physics_healthy.txt`` and MLflow: a comparison run in
the ``photon_id_mixture`` experiment (tagged ``calolab.kind=comparison``, so that the registry
never takes it for a training, as its promotion report runs), holding the metrics
``compare/<category>/d_auc`` (+ ``_err``), ``compare/<category>/d_eff`` (+ ``_err``), each net's
figures and the counts, and the artifacts ``comparison/healthy_vs_mixture.json`` and ``.txt``;
both training runs get the tag ``calolab.comparison_run`` pointing at it.

    .venv/bin/python bench/physics_healthy.py [--events 40000] [--epochs 8] [--seed 12345] [--replicas 1000]
        [--data-dir data/bench] [--tracking-uri sqlite:///bench/results/mlflow.db]

The sample is generated once into ``<data-dir>/photons-unhealthy30-<events>-seed<seed>`` and reused
(7.7 photons/s with 2 workers on a shared, loaded 2-core machine; about 25/s when it is idle).
``--report MIXTURE HEALTHY`` only compares two finished runs.

Measured (issue 16, shared 2-core CPU, 41 min: 26 min generation, 2 x 8 epochs): ``--events 12000``
(seed 12345): 1805 test events, but the jet background carries Pythia pT-hat weights times the
pT/|eta| reweighting, so its 882 test events are worth n_eff = 118 (32 of 266 unhealthy). AUC all
0.967 +- 0.018 (MixtureNN) vs 0.971 +- 0.012 (HealthyNN), difference -0.004 +- 0.008; unhealthy
clusters 0.986 vs 0.980, +0.007 +- 0.004 (1.6 sigma); efficiency at the cuts' rejection, difference
-0.17 +- 0.13 (all), -0.18 +- 0.12 (healthy), +0.02 +- 0.07 (unhealthy): nothing resolved at this
size. The errors scale as 1/sqrt(events): the default 40k events (3.3x) shrink them by ~1.8x.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from calolab import keys  # noqa: E402
from calolab.errors import CalolabError  # noqa: E402
from calolab.evaluation import uncertainty as U  # noqa: E402
from calolab.evaluation.bootstrap import bootstrap, paired_difference, spread  # noqa: E402
from calolab.evaluation.metrics import _max_rejection, auc, efficiency_at_rejection  # noqa: E402

RESULTS = ROOT / "bench" / "results"
#: the two presets, MixtureNN first: differences are mixture - healthy
PRESETS = {"mixture": "photon_id_mixture", "healthy": "photon_id_healthy"}
#: the kind tag of the comparison run (calolab.registry.selection.KIND_TAG): not a training
COMPARISON_KIND = "comparison"
COMPARISON_RUN_TAG = "calolab.comparison_run"
ARTIFACT = "comparison/healthy_vs_mixture"


def overrides(preset: str, args: argparse.Namespace) -> list[str]:
    """``calolab train`` overrides of one preset at the bench's size, epochs and seed."""
    data_dir = Path(args.data_dir).resolve()
    return [
        f"experiment={preset}",
        f"generate.n_events={args.events}",
        f"generate.out={data_dir}/photons-unhealthy30-{args.events}-seed{args.seed}",
        f"generate.seed={args.seed}",
        f"generate.chunk_size={min(1000, args.events)}",
        f"generate.workers={args.workers}",
        f"trainer.max_epochs={args.epochs}",
        f"seed={args.seed}",
        f"tracking.uri={args.tracking_uri}",
        f"paths.data_dir={data_dir}",
        f"run_name=bench-{preset}-{args.events}-seed{args.seed}",
    ]


def train_presets(args: argparse.Namespace, extra: Sequence[str] = ()) -> dict[str, str]:
    """Train MixtureNN then HealthyNN on the one sample; ``{"mixture": run id, "healthy": run id}``.

    ``extra``: further overrides for both (the tests' ``debug=smoke``; the bench passes none).
    """
    from calolab.app import compose_config
    from calolab.pipeline.train import train

    return {
        net: train(compose_config("train", [*overrides(preset, args), *extra]))["run_id"]
        for net, preset in PRESETS.items()
    }


@dataclass
class Scored:
    """Both nets' scores on the same test events, with the reference weights and working point.

    Attributes:
        run_ids: net -> its MLflow run.
        label, weight: (N,) the test events' labels (bool) and the mixture run's test weights.
        scores: net -> (N,) its score on those events.
        wp_pass: (N,) whether each event passes the cut-based working point.
        categories: name -> (label, (N,) bool mask); ``all`` first, then the preset's subsets.
        digest: the mixture run's dataset digest (what the test events are a split of).
    """

    run_ids: dict[str, str]
    label: np.ndarray
    weight: np.ndarray
    scores: dict[str, np.ndarray]
    wp_pass: np.ndarray
    categories: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)
    digest: str = ""


def score_runs(store, run_ids: dict[str, str]) -> Scored:
    """Restore both runs, check that their test splits hold the same events, and score them."""
    from calolab.pipeline.evaluate import build_evaluation
    from calolab.pipeline.restore import restore_run

    restored = {net: restore_run(run_id, store) for net, run_id in run_ids.items()}
    tests = {net: r.dm.arrays("test") for net, r in restored.items()}
    events = {net: np.asarray(t.aux["event_number"]) for net, t in tests.items()}
    if not np.array_equal(events["mixture"], events["healthy"]):
        raise CalolabError(
            f"runs {run_ids['mixture']} (mixture) and {run_ids['healthy']} (healthy) were tested on different "
            f"events ({events['mixture'].size} vs {events['healthy'].size}): train both on one sample and split"
        )
    ref = restored["mixture"]
    evaluation = build_evaluation(ref.cfg)
    test, train = tests["mixture"], ref.dm.arrays("train")
    train_aux = {k: np.asarray(v) for k, v in train.aux.items()}
    test_aux = {k: np.asarray(v) for k, v in test.aux.items()}
    wp_pass = None
    for b in evaluation.baselines:  # the configured working point, else the first baseline that has one
        if evaluation.working_point not in (None, b.name):
            continue
        b.fit(train_aux, np.asarray(train.label), np.asarray(train.weight))
        wp_pass = b.passes(test_aux)
        if wp_pass is not None:
            break
    if wp_pass is None:
        raise CalolabError(f"the evaluation of run {run_ids['mixture']} has no cut-based working point to compare at")
    scores = {}
    for net, r in restored.items():
        task = r.model.cpu().eval()
        scores[net] = task.predict(tests[net].inputs, list(r.dm.input_names), evaluation.batch_size)["score"]
    n = events["mixture"].size
    categories = {"all": ("All test clusters", np.ones(n, dtype=bool))}
    categories |= {sub.name: (sub.label, sub.mask(test_aux)) for sub in evaluation.subsets}
    return Scored(
        run_ids=dict(run_ids),
        label=np.asarray(test.label) == 1,
        weight=np.asarray(test.weight, dtype=np.float64),
        scores={net: np.asarray(s, dtype=np.float64) for net, s in scores.items()},
        wp_pass=np.asarray(wp_pass, dtype=bool),
        categories=categories,
        digest=ref.dm.digest,
    )


def compare(scored: Scored, replicas: int = 1000, seed: int = 0) -> dict:
    """Per category: each net's AUC and efficiency at the cuts' rejection, and mixture - healthy, paired."""
    rows = {}
    for name, (label, mask) in scored.categories.items():
        y, w, wp = scored.label[mask], scored.weight[mask], scored.wp_pass[mask]
        row: dict = {
            "label": label,
            "n_events": int(mask.sum()),
            "n_signal": int(y.sum()),
            "n_background": int((~y).sum()),
        }
        if y.all() or not y.any():
            rows[name] = row | {"skipped": "needs signal and background events in the category"}
            continue
        row["n_signal_eff"], row["n_background_eff"] = U.effective_count(w[y]), U.effective_count(w[~y])
        eb = float(w[wp & ~y].sum() / w[~y].sum())
        rej = 1.0 / eb if eb > 0 else _max_rejection(y, w)
        row["cuts_eff"] = float(w[wp & y].sum() / w[y].sum())
        row["cuts_rej"] = U.rejection(eb, row["n_background_eff"], _max_rejection(y, w)).value
        row["cuts_rej_is_bound"] = eb <= 0
        scores = {net: s[mask] for net, s in scored.scores.items()}
        reps = bootstrap(y, scores, w, replicas=replicas, seed=seed, efficiencies=(0.5,), working_point=wp)
        for net, s in scores.items():
            row[f"auc_{net}"], row[f"auc_{net}_err"] = auc(y, s, w), spread(reps[net]["auc"])
            row[f"eff_{net}"] = efficiency_at_rejection(y, s, rej, w)[0]
            row[f"eff_{net}_err"] = spread(reps[net]["eff_at_wp_rej"])
        for fig, rep, title in (("auc", "auc", "AUC"), ("eff", "eff_at_wp_rej", "efficiency at the cuts' rejection")):
            unresolved, err = paired_difference(reps["mixture"][rep], reps["healthy"][rep])
            diff = row[f"{fig}_mixture"] - row[f"{fig}_healthy"]
            c = U.Comparison(
                "MixtureNN",
                "HealthyNN",
                title,
                diff,
                err,
                row["n_signal_eff"],
                row["n_background_eff"],
                bound=unresolved > U.UNRESOLVED_FRACTION,
            )
            row[f"d_{fig}"], row[f"d_{fig}_err"], row[f"d_{fig}_resolved"] = diff, err, c.resolved
            row[f"d_{fig}_line"] = c.line()
        rows[name] = row
    return {
        "runs": scored.run_ids,
        "dataset_digest": scored.digest,
        "n_test_events": int(scored.label.size),
        "weights": "the mixture run's test weights (pT/|eta| reweighting fitted on the mixture's training split)",
        "working_point": "cut-based tight-like cuts fitted on the mixture run's training split",
        "uncertainty": {"method": "std of paired Poisson-bootstrap replicas", "replicas": replicas, "seed": seed},
        "resolved_sigma": U.RESOLVED_SIGMA,
        "categories": rows,
    }


def _pm(value: float, err: float) -> str:
    return f"{value:.4f} +- {err:.4f}"


def format_table(table: dict, header: str = "") -> str:
    """The comparison as a text table, one line per category and figure."""
    u = table["uncertainty"]
    lines = [header] if header else []
    lines += [
        f"MixtureNN run {table['runs']['mixture']}, HealthyNN run {table['runs']['healthy']}; the same "
        f"{table['n_test_events']} test events; uncertainties: std of {u['replicas']} paired Poisson-bootstrap "
        f"replicas (seed {u['seed']}); resolved: |diff| > {table['resolved_sigma']:g} sigma",
        f"  {'category':<10} {'events (sig/bkg; n_eff)':<31} {'figure':<12} {'MixtureNN':>17} {'HealthyNN':>17} "
        f"{'mixture - healthy':>18}  verdict",
    ]
    for name, row in table["categories"].items():
        counts = f"{row['n_events']} ({row['n_signal']}/{row['n_background']}"
        if "skipped" in row:
            lines.append(f"  {name:<10} {counts + ')':<31} skipped: {row['skipped']}")
            continue
        counts += f"; {row['n_signal_eff']:.0f}/{row['n_background_eff']:.0f})"
        for fig, title in (("auc", "AUC"), ("eff", "eff@cuts rej")):
            verdict = "resolved" if row[f"d_{fig}_resolved"] else "not resolved"
            lines.append(
                f"  {name if fig == 'auc' else '':<10} {counts if fig == 'auc' else '':<31} {title:<12} "
                f"{_pm(row[f'{fig}_mixture'], row[f'{fig}_mixture_err']):>17} "
                f"{_pm(row[f'{fig}_healthy'], row[f'{fig}_healthy_err']):>17} "
                f"{row[f'd_{fig}']:+.4f} +- {row[f'd_{fig}_err']:.4f}  {verdict}"
            )
        bound = "> " if row["cuts_rej_is_bound"] else ""
        lines.append(
            f"  {'':<10} {'':<31} cuts: signal eff {row['cuts_eff']:.3f} at rejection {bound}{row['cuts_rej']:.1f}"
        )
    return "\n".join(lines)


def comparison_metrics(table: dict) -> dict[str, float]:
    """``compare/<category>/<figure>`` -> value (finite values only, as MLflow takes them)."""
    out = {}
    for name, row in table["categories"].items():
        for key, value in row.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or key.endswith("_is_bound"):
                continue
            if math.isfinite(value):
                out[f"compare/{name}/{key}"] = float(value)
    return out


def log_comparison(store, table: dict, text: str, experiment: str = PRESETS["mixture"]) -> str:
    """The comparison as its own run in ``experiment`` (see the module docstring); returns its id."""
    import mlflow

    from calolab.registry.selection import KIND_TAG
    from calolab.tracking import TrackedRun

    runs = table["runs"]
    tags = {
        KIND_TAG: COMPARISON_KIND,
        keys.MLFLOW_SOURCE_TAG: "bench/physics_healthy.py",
        keys.DATASET_DIGEST_TAG: table["dataset_digest"],
        "calolab.mixture_run_id": runs["mixture"],
        "calolab.healthy_run_id": runs["healthy"],
    }
    name = f"compare-healthy-vs-mixture-{runs['mixture'][:8]}-{runs['healthy'][:8]}"
    with TrackedRun(store, experiment, run_name=name, tags=tags) as run:
        mlflow.log_metrics(comparison_metrics(table))
        mlflow.log_dict(table, f"{ARTIFACT}.json")
        mlflow.log_text(text + "\n", f"{ARTIFACT}.txt")
    client = store.client()
    for run_id in runs.values():
        client.set_tag(run_id, COMPARISON_RUN_TAG, run.run_id)
    return run.run_id


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=40_000, help="photon candidates in the sample (30%% unhealthy)")
    parser.add_argument("--epochs", type=int, default=8, help="max epochs of each net (the presets' 8)")
    parser.add_argument("--seed", type=int, default=12345, help="generation and training seed (the presets' 12345)")
    parser.add_argument("--replicas", type=int, default=1000, help="bootstrap replicas (seed 0, as the evaluation)")
    parser.add_argument("--workers", type=int, default=2, help="generator processes when the sample is missing")
    parser.add_argument("--data-dir", default=str(ROOT / "data" / "bench"))
    parser.add_argument("--tracking-uri", default=f"sqlite:///{RESULTS / 'mlflow.db'}")
    parser.add_argument("--report", nargs=2, metavar=("MIXTURE", "HEALTHY"), help="only compare these two runs")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)

    from calolab.tracking import TrackingStore

    t0 = time.perf_counter()
    if args.report:
        run_ids = dict(zip(PRESETS, args.report))
        header = "HealthyNN vs MixtureNN (finished runs)"
    else:
        run_ids = train_presets(args)
        header = (
            f"HealthyNN vs MixtureNN: photon sample of {args.events} candidates, 30% unhealthy (generate seed "
            f"{args.seed}), {args.epochs} epochs max each, training seed {args.seed}; "
            f"{(time.perf_counter() - t0) / 60:.1f} min"
        )
    store = TrackingStore.resolve(args.tracking_uri, str(RESULTS))
    table = compare(score_runs(store, run_ids), replicas=args.replicas)
    text = format_table(table, header)
    run_id = log_comparison(store, table, text)
    text += f"\n  logged: MLflow run {run_id} (experiment {PRESETS['mixture']}), artifact {ARTIFACT}.json/.txt"
    print(text, flush=True)
    (RESULTS / "physics_healthy.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
