"""Benchmark: how close LAGAN's generated W and QCD jets are to simulated ones, next to the floor.

Generates (or reuses) the W/QCD jet sample in LAGAN's 60 < m < 100 GeV slice (``calolab generate
sample=wjets`` with the generator's own mass cut), trains ``experiment=lagan`` on it exactly as
``calolab train`` does (MLflow run in ``bench/results/lagan.db``), restores the run's generator
with its best (lowest ``val/fpd``) weights, and compares, per class, images generated for seeded
latents with the *test* split's simulated images: W1 of jet mass, tau21 and pT computed from the
images (and the Frechet distance of the three). The floor is the same distances between two
independent simulated samples of the same class, the validation and test splits (disjoint
events, about the same size). The compass's goal: within 3x of the floor. With
``--tagger-epochs N`` it also trains the W tagger ``experiment=wtag_cnn`` on the same sample and
quotes its AUC (W vs QCD) on the simulated test jets and on as many generated ones (the tagger's
input is the image divided by its pT sum, as ``conf/data/wtag.yaml`` normalises).

    .venv/bin/python bench/physics_lagan.py [--events 100000] [--epochs 50] [--net lagan_paper]
                                            [--data-dir data/bench] [--seed 12345] [--workers 2]
                                            [--tagger-epochs 0]

``--events`` is the sample size (half W, half QCD; the default is the issue's 50k jets per class;
the generator runs ~10-30 jets/s per core, fewer with the mass cut). The table, sizes, epochs and
training time are printed and written to ``bench/results/physics_lagan.txt``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from calolab.app import compose_config  # noqa: E402
from calolab.evaluation.fidelity import feature_distances, jet_features  # noqa: E402
from calolab.pipeline.restore import restore_run  # noqa: E402
from calolab.pipeline.train import train  # noqa: E402
from calolab.tracking import TrackingStore  # noqa: E402
from datamodules.jet_images import pixel_centres  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def ensure_sample(args: argparse.Namespace) -> Path:
    """The generated W/QCD sample in the mass slice (reused when complete with the same settings)."""
    out = Path(args.sample_dir or Path(args.data_dir) / f"wjets-lagan-{args.events}").resolve()
    cmd = [
        str(Path(sys.executable).with_name("calolab")),
        "generate",
        "sample=wjets",
        f"n_events={args.events}",
        f"out={out}",
        f"seed={args.seed}",
        f"workers={args.workers}",
        "chunk_size=500",
        "sample.jets.mass_min=60",
        "sample.jets.mass_max=100",
        "reuse=true",
        "progress=false",
    ]
    subprocess.run(cmd, check=True)
    return out


def distances(task, cfg, sim_test, lab_test, sim_val, lab_val, seed: int) -> list[tuple[str, dict, dict, int]]:
    """Per class: (name, generated-vs-test distances, val-vs-test floor, images per sample)."""
    eta, phi = pixel_centres(sim_test.shape[-2:], list(cfg.data.half_width))
    scale = float(cfg.model.unit_scale)
    rows = []
    for c, name in enumerate(cfg.model.class_names):
        test, val = sim_test[lab_test == c], sim_val[lab_val == c]
        n = min(len(test), len(val))
        test, val = test[:n], val[:n]
        gen = task.generate(np.full(n, c), seed)
        ft, fv, fg = (jet_features(x, eta, phi, scale) for x in (test, val, gen))
        d_gen = feature_distances(fg, ft, gen.ravel(), test.ravel(), scale)
        d_floor = feature_distances(fv, ft, val.ravel(), test.ravel(), scale)
        rows.append((str(name), d_gen, d_floor, n))
    return rows


def tagger_aucs(
    args, sample: Path, db: str, images: np.ndarray, label: np.ndarray, gen: np.ndarray
) -> tuple[float, float]:
    """AUC of a W tagger trained on the sample, on simulated ``images`` and on generated ``gen`` (same labels)."""
    from calolab.evaluation.metrics import auc

    overrides = [
        "experiment=wtag_cnn",
        "generate=null",
        f"data.files=[{sample}/*.root]",
        f"data.cache_dir={Path(args.data_dir).resolve()}/cache",
        f"trainer.max_epochs={args.tagger_epochs}",
        f"tracking.uri={db}",
        "tracking.log_models=false",
    ]
    run_id = train(compose_config("train", overrides))["run_id"]
    tagger = restore_run(run_id, TrackingStore.resolve(db, str(RESULTS))).model.cpu().eval()

    def score(x: np.ndarray) -> np.ndarray:
        total = x.sum(axis=(1, 2, 3), keepdims=True)
        normalised = np.divide(x, total, out=np.zeros_like(x), where=total > 0).astype(np.float32)
        return tagger.predict({"image": normalised}, ["image"])["score"]

    weight = np.ones(len(label))
    return auc(label, score(images), weight), auc(label, score(gen), weight)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="jets in the sample (half W, half QCD)")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--net", default="lagan_paper", help="conf/net option (lagan_small for CPUs)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--data-dir", default=str(ROOT / "data" / "bench"))
    parser.add_argument("--sample-dir", default=None, help="an existing sample folder (its size wins over --events)")
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tagger-epochs", type=int, default=0, help="train wtag_cnn this long for the AUC check")
    args = parser.parse_args()

    sample = ensure_sample(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    db = f"sqlite:///{RESULTS / 'lagan.db'}"
    overrides = [
        "experiment=lagan",
        f"net={args.net}",
        "generate=null",
        f"data.files=[{sample}/*.root]",
        f"data.cache_dir={Path(args.data_dir).resolve()}/cache",
        f"data.batch_size={args.batch_size}",
        f"trainer.max_epochs={args.epochs}",
        f"tracking.uri={db}",
        f"seed={args.seed}",
        "tracking.log_models=false",
    ]
    start = time.perf_counter()
    result = train(compose_config("train", overrides))
    seconds = time.perf_counter() - start
    restored = restore_run(result["run_id"], TrackingStore.resolve(db, str(RESULTS)))
    task, dm, cfg = restored.model.cpu().eval(), restored.dm, restored.cfg
    test, val = dm.arrays("test"), dm.arrays("val")
    counts = {
        s: {c: int((dm.arrays(s).label == i).sum()) for i, c in enumerate(cfg.model.class_names)}
        for s in ("train", "val", "test")
    }
    rows = distances(
        task,
        cfg,
        np.asarray(test.inputs["image"]),
        np.asarray(test.label).astype(int),
        np.asarray(val.inputs["image"]),
        np.asarray(val.label).astype(int),
        seed=args.seed,
    )
    lines = [
        f"LAGAN ({args.net}) on {sample} (60 < m < 100 GeV): jets per split and class {counts}",
        f"trained {args.epochs} epochs (batch {args.batch_size}) in {seconds / 60:.1f} min (training, evaluation and "
        f"export; {torch_threads()} torch threads); run {result['run_id']} in {db}",
        "generated: seeded latents, as many as the simulated test jets of the class; floor: simulated val vs test jets",
        f"{'class':<6} {'n':>6} {'distance':<10} {'generated':>11} {'floor':>11} {'ratio':>7}",
    ]
    for name, d_gen, d_floor, n in rows:
        for key in ("w1_mass", "w1_tau21", "w1_pt", "fpd"):
            ratio = d_gen[key] / d_floor[key] if d_floor[key] > 0 else float("inf")
            lines.append(f"{name:<6} {n:>6} {key:<10} {d_gen[key]:>11.4g} {d_floor[key]:>11.4g} {ratio:>7.2f}")
    lines.append(
        "W1(mass) and W1(pT) in GeV; tau21 dimensionless; fpd: Frechet distance of standardised (mass, pT, tau21)"
    )
    if args.tagger_epochs > 0:
        images, label = np.asarray(test.inputs["image"]), np.asarray(test.label).astype(int)
        gen = task.generate(label, args.seed + 1)
        sim_auc, gen_auc = tagger_aucs(args, sample, db, images, label, gen)
        lines.append(
            f"W tagger (wtag_cnn, {args.tagger_epochs} epochs on the simulated training jets) AUC on {len(label)} test jets: "
            f"simulated {sim_auc:.4f}, generated (same classes) {gen_auc:.4f}"
        )
    text = "\n".join(lines)
    print(text)
    (RESULTS / "physics_lagan.txt").write_text(text + "\n")


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
