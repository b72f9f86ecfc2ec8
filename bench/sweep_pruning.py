"""Pruning benchmark: the same Optuna search with and without median pruning.

Same sampler seed, same trial budget, same sample; prints, per setting, the total epochs trained
(the cost) and the best value (the result), then the ratios. Target: pruning spends <= 60% of the
epochs for a best value within the run-to-run spread (``--repeats`` seeds give that spread).

    .venv/bin/python bench/sweep_pruning.py [--trials 20] [--epochs 10] [--events 2000] [--repeats 3]

The photon_id preset (TPE, median pruner with 3 startup trials and 1 warm-up epoch) on the
smoke-mode photon sample with full epochs; it optimises val/loss, as val/auc saturates on a
sample this small. Pruning can only pay once trials have epochs to save: with the preset's
startup and warm-up, 8 trials x 4 epochs cannot go below 0.69 whatever the pruner decides.
About 25 minutes on 2 CPU cores (six sweeps of 2-5 minutes each).
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sweeps.pruners import make_pruner  # noqa: E402
from sweeps.storage import open_storage  # noqa: E402


def run(root: Path, pruner: str, seed: int, args: argparse.Namespace) -> tuple[int, float, optuna.Study]:
    name = f"bench-{pruner}-{seed}"
    cmd = [
        str(Path(sys.executable).with_name("calolab")),
        "train",
        "-m",
        "experiment=photon_id",
        "sweep=photon_id",
        "debug=smoke",
        f"paths.data_dir={root / 'data'}",
        f"paths.log_dir={root / 'logs'}",
        f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
        f"generate.n_events={args.events}",
        "tracking.log_models=false",
        f"trainer.max_epochs={args.epochs}",
        "trainer.limit_train_batches=1.0",
        "trainer.limit_val_batches=1.0",
        "callbacks.early_stopping.patience=100",
        # val/loss: val/auc saturates on small samples and ties never prune
        "hydra.sweeper.metric=val/loss",
        "hydra.sweeper.direction=minimize",
        f"hydra.sweeper.pruner={pruner}",
        f"hydra.sweeper.study_name={name}",
        f"hydra.sweeper.n_trials={args.trials}",
        f"hydra.sweeper.seed={seed}",
    ]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    storage = open_storage(str(root / "logs/train/sweeps" / name / "optuna.journal"))
    study = optuna.load_study(study_name=name, storage=storage)
    epochs = sum(int(t.user_attrs.get("calolab.epochs", 0)) for t in study.get_trials())
    return epochs, study.best_value, study


def replay(unpruned: optuna.Study, pruner_spec: dict) -> tuple[float, float]:
    """The pruner alone, without the sampler's feedback: replay it on an unpruned sweep's
    learning curves (every trial reports every epoch, also without a pruner), in trial order.
    Returns the fraction of epochs it would have trained and the best value it would have lost."""
    shadow = optuna.create_study(
        direction="minimize", pruner=make_pruner(pruner_spec["name"], options=pruner_spec["options"])
    )
    epochs = total = 0
    for t in unpruned.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        curve = [t.intermediate_values[k] for k in sorted(t.intermediate_values)]
        total += len(curve)
        trial = shadow.ask()
        for step, value in enumerate(curve):
            epochs += 1
            trial.report(value, step)
            if trial.should_prune():
                shadow.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            shadow.tell(trial, t.value)
    return epochs / total, shadow.best_value - unpruned.best_value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3, help="sampler seeds per setting (the spread)")
    parser.add_argument("--pruner", default="median", help="the pruner to compare with none (median, hyperband)")
    parser.add_argument("--seed", type=int, default=12345)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results: dict[str, list[tuple[int, float]]] = {"none": [], args.pruner: []}
    replays = []
    with tempfile.TemporaryDirectory(prefix="calolab-bench-") as tmp:
        for i in range(args.repeats):
            studies = {}
            for pruner in results:
                epochs, best, studies[pruner] = run(Path(tmp), pruner, args.seed + i, args)
                results[pruner].append((epochs, best))
                print(f"{pruner:>9} seed {args.seed + i}: epochs {epochs}, best val/loss {best:.4f}", flush=True)
            replays.append(replay(studies["none"], studies[args.pruner].user_attrs["calolab.pruner"]))
            print(f"   replay seed {args.seed + i}: epochs ratio {replays[-1][0]:.2f}, best lost {replays[-1][1]:+.4f}")
    p = args.pruner
    epochs = {k: statistics.mean(e for e, _ in r) for k, r in results.items()}
    best = {k: [b for _, b in r] for k, r in results.items()}
    # run-to-run spread: the pooled standard deviation of the best value over sampler seeds, both
    # arms (how much the best of one sweep moves from seed to seed); "the same" means within it
    spread = (
        math.sqrt((statistics.variance(best["none"]) + statistics.variance(best[p])) / 2)
        if args.repeats > 1
        else float("nan")
    )
    ratio = epochs[p] / epochs["none"]
    diff = statistics.mean(best[p]) - statistics.mean(best["none"])
    print(f"\n{args.trials} trials x {args.epochs} epochs, {args.events} events, {args.repeats} sampler seed(s)")
    print(f"epochs trained   none {epochs['none']:.1f}   {p} {epochs[p]:.1f}   ratio {ratio:.2f} (target <= 0.60)")
    print(
        f"best val/loss    none {statistics.mean(best['none']):.4f}   {p} {statistics.mean(best[p]):.4f}   "
        f"difference {diff:+.4f}   run-to-run spread (pooled stdev) {spread:.4f}"
    )
    print(
        f"replay           the {p} pruner on the unpruned sweeps' curves: epochs ratio "
        f"{statistics.mean(r for r, _ in replays):.2f}, best value lost {statistics.mean(d for _, d in replays):+.4f} "
        "(the pruner's own effect, without the sampler following a different path)"
    )
    verdict = "met" if ratio <= 0.60 and abs(diff) <= spread else "missed"
    print(f"target {verdict}: epochs ratio <= 0.60 and |difference| <= spread")


if __name__ == "__main__":
    main()
