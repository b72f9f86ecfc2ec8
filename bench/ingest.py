"""Benchmark: ROOT -> cache ingest of the datamodules against a bare uproot read.

Two cases, each on a synthetic sample with the generator's branches (written with uproot;
made once and reused) and the shipped data config:

- ``photons``: ``CaloDataModule`` with ``conf/data/photon_id.yaml`` on photon-like cell images
  (showers plus Gaussian noise); target >= 0.7.
- ``jets``: ``JetImageDataModule`` with ``conf/data/wtag.yaml`` on W/QCD-like jets (~30
  constituents: tracks, and towers on a 0.1 x 0.1 grid), building 25 x 25 images with the
  leading-subjet centring, rotation and flip from the jagged constituent branches; target >= 0.5.

Each is read three ways:

(a) a bare ``uproot`` read of the branches the datamodule reads, file by file (into numpy for
    the photons; into awkward arrays for the jets, uproot's fast path for jagged branches);
(b) the first pass ``prepare_data()`` (ROOT -> checks -> images/normalisation -> split ->
    weights -> cache files), with no cache present;
(c) the cached pass: a new datamodule's ``prepare_data()`` + ``setup()`` + reading every
    split's arrays fully.

(a) and (b) are timed as the best of ``--repeat`` interleaved runs, (c) as the best of
``--repeat`` (the page cache is flushed with ``sync`` before each, so that one run's write-back
does not slow the next). Prints events/s and the ratios; exits 1 when (b)/(a) misses a case's
target.

    .venv/bin/python bench/ingest.py [--case all|photons|jets] [--events 200000] [--files 4] [--repeat 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import awkward as ak  # noqa: E402
import numpy as np  # noqa: E402
import uproot  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from calolab.app import CONF_DIR  # noqa: E402
from calolab.generation.writer import write_tree  # noqa: E402
from datamodules import CaloDataModule, JetImageDataModule  # noqa: E402

#: case -> (datamodule class, shipped data config, (b)/(a) target)
CASES = {
    "photons": (CaloDataModule, "photon_id", 0.7),
    "jets": (JetImageDataModule, "wtag", 0.5),
}
SAMPLE_VERSION = 2
JET_SAMPLE_VERSION = 1
LAYERS = {"cells_EMB1": (56, 3), "cells_EMB2": (7, 11), "cells_EMB3": (4, 11), "cells_TileBar0": (2, 3)}
NOISE_MEV = {"cells_EMB1": 13.0, "cells_EMB2": 34.0, "cells_EMB3": 41.0, "cells_TileBar0": 75.0}
LAYER_FRACTION = {"cells_EMB1": 0.3, "cells_EMB2": 0.6, "cells_EMB3": 0.08, "cells_TileBar0": 0.02}
SHOWER_SHAPES = ("Rhad", "Reta", "Rphi", "weta2", "wstot", "ws3", "Eratio", "DeltaE", "fside")


def synthetic_events(n: int, first_event: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Photon-like events: narrow (signal) or wide (background) showers plus cell noise."""
    label = (rng.random(n) < 0.5).astype(np.int32)
    pt = np.clip(20e3 * np.exp(rng.exponential(np.where(label == 1, 0.6, 0.4))), 20e3, 150e3).astype(np.float32)
    eta = rng.uniform(-1.37, 1.37, n).astype(np.float32)
    energy = pt * np.cosh(eta)
    out = {
        "event_number": np.arange(first_event, first_event + n, dtype=np.int64),
        "ph_pt": pt,
        "ph_eta": eta,
        "ph_phi": rng.uniform(-np.pi, np.pi, n).astype(np.float32),
        "truth_pt": pt,
        "truth_eta": eta,
        "truth_label": label,
        "truth_pdgid": np.where(label == 1, 22, 111).astype(np.int32),
        "mu": rng.uniform(0, 60, n).astype(np.float32),
        # pT-hat-biased background carries an event weight, as the generator's
        "mc_weight": np.where(label == 1, 1.0, (pt / 20e3) ** -4).astype(np.float32),
        "is_unhealthy": rng.random(n) < 0.01,
    }
    width = np.where(label == 1, 0.8, 1.4)[:, None, None]
    for name, (h, w) in LAYERS.items():
        i = np.arange(h)[None, :, None] - (h - 1) / 2
        j = np.arange(w)[None, None, :] - (w - 1) / 2
        s = width * max(h, w) / 8
        profile = np.exp(-(i**2 + j**2) / (2 * s**2))
        profile /= profile.sum(axis=(1, 2), keepdims=True)
        cells = (energy * LAYER_FRACTION[name])[:, None, None] * profile + NOISE_MEV[name] * rng.standard_normal(
            (n, h, w)
        )
        out[name] = cells.astype(np.float32)  # (n, eta, phi)
    for name in SHOWER_SHAPES:
        out[name] = rng.random(n).astype(np.float32)
    return out


def synthetic_jets(n: int, first_event: int, rng: np.random.Generator) -> dict:
    """W/QCD-like leading jets: two prongs (signal) or one (background) plus a soft spray.

    ~30 constituents per jet as the generated wjets sample; charged ones are tracks (any
    direction), neutral ones towers at the centres of a 0.1 x 0.1 grid. pT in MeV.
    """
    label = (rng.random(n) < 0.5).astype(np.int32)
    counts = rng.poisson(30, n).clip(3)
    jet = np.repeat(np.arange(n), counts)
    m = len(jet)
    axis_eta, axis_phi = rng.uniform(-2, 2, n), rng.uniform(-np.pi, np.pi, n)
    angle, sep = rng.uniform(-np.pi, np.pi, n), rng.uniform(0.2, 0.6, n)
    prong = (label[jet] == 1) & (rng.random(m) < 0.4)
    spray = rng.random(m) < 0.3
    width = np.where(spray, 0.4, 0.05)
    eta = axis_eta[jet] + prong * sep[jet] * np.cos(angle[jet]) + rng.normal(0, 1, m) * width
    phi = axis_phi[jet] + prong * sep[jet] * np.sin(angle[jet]) + rng.normal(0, 1, m) * width
    charge = rng.choice([-1.0, 0.0, 1.0], m, p=[0.3, 0.4, 0.3])
    tower = charge == 0
    eta = np.where(tower, (np.floor(eta / 0.1) + 0.5) * 0.1, eta)
    phi = np.where(tower, (np.floor(phi / 0.1) + 0.5) * 0.1, phi)
    phi = (phi + np.pi) % (2 * np.pi) - np.pi
    pt = rng.exponential(np.where(spray, 1e3, 15e3)) + 500.0
    px, py = np.bincount(jet, pt * np.cos(phi), n), np.bincount(jet, pt * np.sin(phi), n)
    pz, e = np.bincount(jet, pt * np.sinh(eta), n), np.bincount(jet, pt * np.cosh(eta), n)
    jet_pt = np.hypot(px, py)
    const = ak.zip(
        {
            "pt": ak.unflatten(pt.astype(np.float32), counts),
            "eta": ak.unflatten(eta.astype(np.float32), counts),
            "phi": ak.unflatten(phi.astype(np.float32), counts),
            "charge": ak.unflatten(charge.astype(np.float32), counts),
            "is_pileup": ak.unflatten(np.zeros(m, bool), counts),
        }
    )
    return {
        "jet_pt": jet_pt.astype(np.float32),
        "jet_eta": np.arcsinh(pz / jet_pt).astype(np.float32),
        "jet_phi": np.arctan2(py, px).astype(np.float32),
        "jet_m": np.sqrt(np.maximum(e**2 - px**2 - py**2 - pz**2, 0)).astype(np.float32),
        "jet_tau21": rng.random(n).astype(np.float32),
        "jet_nconst": counts.astype(np.int32),
        "truth_label": label,
        "mu": np.zeros(n, np.float32),
        "event_number": np.arange(first_event, first_event + n, dtype=np.int64),
        "const": const,
    }


def write_photons(path: Path, events: dict) -> None:
    types = {k: np.dtype((v.dtype, v.shape[1:])) if v.ndim > 1 else v.dtype for k, v in events.items()}
    with uproot.recreate(path) as f:
        tree = f.mktree("photons", types)
        for start in range(0, len(events["event_number"]), 5000):
            tree.extend({k: v[start : start + 5000] for k, v in events.items()})


def make_sample(folder: Path, n_events: int, n_files: int, case: str = "photons") -> list[Path]:
    """Write (or reuse) ``n_files`` ROOT files of ``n_events`` in all under ``folder``."""
    stamp = folder / "sample.json"
    version = SAMPLE_VERSION if case == "photons" else JET_SAMPLE_VERSION
    spec = {"version": version, "case": case, "events": n_events, "files": n_files}
    paths = [folder / f"{case}_{k:03d}.root" for k in range(n_files)]
    if stamp.is_file() and json.loads(stamp.read_text()) == spec and all(p.is_file() for p in paths):
        print(f"reusing the sample in {folder}")
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    print(f"writing a {n_events}-event {case} sample in {n_files} files to {folder} ...", flush=True)
    rng = np.random.default_rng(2024)
    per_file = np.diff(np.linspace(0, n_events, n_files + 1).astype(int))
    first = 0
    for path, n in zip(paths, per_file):
        if case == "photons":
            write_photons(path, synthetic_events(int(n), first, rng))
        else:
            write_tree(path, "jets", synthetic_jets(int(n), first, rng))
        first += int(n)
    stamp.write_text(json.dumps(spec))
    return paths


def data_config(name: str, files: str, cache_dir: Path) -> dict:
    """The shipped data config ``name``, pointed at the benchmark sample and cache."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "data" / f"{name}.yaml"), resolve=False)
    cfg.pop("_target_")
    cfg.update(files=[files], cache_dir=str(cache_dir))
    return cfg


def data_branches(dm) -> tuple[list[str], str]:
    """Every branch the datamodule reads (scalars first), and the uproot library for them."""
    reader = dm._reader()
    names = [*reader.scalar_branches, *(b for spec in reader.inputs for b in spec.branches), *reader.lists]
    return list(dict.fromkeys(names)), "ak" if reader.lists else "np"


def bare_read(paths: list[Path], tree: str, branches: list[str], library: str) -> int:
    n = 0
    for path in paths:
        with uproot.open(path) as f:
            arrays = f[tree].arrays(filter_name=branches, library=library)
            n += len(arrays[branches[0]])
    return n


def best_of(repeat: int, fn, before=None) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        if before is not None:
            before()
        os.sync()
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def run_case(case: str, args: argparse.Namespace) -> bool:
    """Time (a), (b), (c) for one case; print them; whether (b)/(a) meets the case's target."""
    cls, config, target = CASES[case]
    target = args.target if args.target is not None else target
    sample = args.dir / f"{case}-{args.events}x{args.files}"
    paths = make_sample(sample, args.events, args.files, case)
    cache_dir = args.dir / f"cache-{case}"
    cfg = data_config(config, str(sample / "*.root"), cache_dir)
    branches, library = data_branches(cls(**cfg))
    print(
        f"[{case}] {config}.yaml: {args.events} events, {len(paths)} files, {len(branches)} branches, best of {args.repeat}"
    )

    def clear_cache():
        shutil.rmtree(cache_dir, ignore_errors=True)

    def build():
        cls(**cfg).prepare_data()

    def cached():
        dm = cls(**cfg)
        dm.prepare_data()
        dm.setup("fit")
        total = 0
        for split in ("train", "val", "test"):
            a = dm.arrays(split)
            for x in (*a.inputs.values(), a.label, a.weight, *a.aux.values()):
                total += np.array(x).nbytes  # read every page
        return total

    t_bare, t_first = float("inf"), float("inf")
    for _ in range(args.repeat):  # interleaved, so that a busy moment hurts both alike
        t, n = best_of(1, lambda: bare_read(paths, cfg["tree"], branches, library))
        t_bare = min(t_bare, t)
        t, _ = best_of(1, build, before=clear_cache)
        t_first = min(t_first, t)
    t_cached, nbytes = best_of(args.repeat, cached)
    clear_cache()  # rebuilt by every run anyway; the sample is what is worth keeping

    rate_bare, rate_first, rate_cached = n / t_bare, n / t_first, n / t_cached
    ratio = rate_first / rate_bare
    print(f"(a) bare uproot read       {t_bare:7.3f} s  {rate_bare:12,.0f} events/s")
    print(f"(b) first pass ROOT->cache {t_first:7.3f} s  {rate_first:12,.0f} events/s")
    print(f"(c) cached pass            {t_cached:7.3f} s  {rate_cached:12,.0f} events/s  ({nbytes / 1e6:.0f} MB read)")
    print(f"[{case}] ingest ratio (b)/(a) = {ratio:.2f}  (target >= {target})")
    print(f"[{case}] cached speed-up (c)/(b) = {rate_cached / rate_first:.1f}x")
    if ratio < target:
        print(f"FAIL [{case}]: the first pass is too slow against a bare uproot read", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["all", *CASES], default="all")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "calolab-bench-ingest")
    parser.add_argument("--target", type=float, default=None, help="override every case's target")
    args = parser.parse_args(argv)
    cases = list(CASES) if args.case == "all" else [args.case]
    ok = [run_case(case, args) for case in cases]
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
