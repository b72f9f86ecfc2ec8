"""Benchmark: the full generator against bare Pythia ``next()`` for the same processes.

For each case the full chain (Pythia batches -> candidate/jet finding -> pileup overlay ->
detector -> shower shapes or jets -> ROOT files) runs through ``run_generation`` on one worker,
and the Pythia events it consumed per second are compared with a bare ``Pythia.next()`` loop
over the same processes (same settings, same number of events, initialisation included in
both). Targets (issue 2): >= 0.5 without pileup, >= 0.3 at mu = 50.

    .venv/bin/python bench/generate.py [--events N] [--cases photons,wjets,wjets_mu50,qgjets]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import open_dict  # noqa: E402

from calolab.app import CONF_DIR  # noqa: E402
from calolab.generation.pythia import PythiaGenerator, _quiet_stdout  # noqa: E402
from calolab.generation.runner import run_generation  # noqa: E402

CASES = {
    "photons": ("photons", 0.0, 0.5),
    "wjets": ("wjets", 0.0, 0.5),
    "qgjets": ("qgjets", 0.0, 0.5),
    "wjets_mu50": ("wjets", 50.0, 0.3),
}


def bare_pythia_rate(settings_by_process: list[list[str]], n_by_process: list[int], ecm: float) -> float:
    """Events/s of plain ``Pythia.next()`` (init included), the same event counts per process."""
    import pythia8mc

    total_t, total_n = 0.0, 0
    for settings, n in zip(settings_by_process, n_by_process):
        t0 = time.perf_counter()
        with _quiet_stdout():
            p = pythia8mc.Pythia("", False)
            for s in [
                f"Beams:eCM = {ecm}",
                "Next:numberCount = 0",
                "Random:setSeed = on",
                "Random:seed = 4242",
                *settings,
            ]:
                assert p.readString(s), s
            p.init()
            for _ in range(n):
                p.next()
        total_t += time.perf_counter() - t0
        total_n += n
    return total_n / total_t


def run_case(name: str, n_events: int) -> dict:
    sample, mu, target = CASES[name]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "generate",
            [
                f"sample={sample}",
                f"n_events={n_events}",
                "progress=false",
                f"pileup.mu={mu}",
                "workers=1",
                f"chunk_size={n_events}",
            ],
        )
    with tempfile.TemporaryDirectory() as tmp, open_dict(cfg):
        cfg.out = os.path.join(tmp, sample)
        # count Pythia events per process: wrap next_batch
        per_settings: dict[tuple, int] = {}
        orig = PythiaGenerator.next_batch

        def counting(self, n, *a, **k):
            res = orig(self, n, *a, **k)
            key = getattr(self, "_bench_key", None)
            if key is not None:
                per_settings[key] = per_settings.get(key, 0) + len(res[0] if isinstance(res, tuple) else res)
            return res

        orig_init = PythiaGenerator.__init__

        def init(self, settings, seed, ecm_gev=13000.0, name="pythia"):
            orig_init(self, settings, seed, ecm_gev, name)
            self._bench_key = tuple(settings)

        PythiaGenerator.next_batch, PythiaGenerator.__init__ = counting, init
        try:
            t0 = time.perf_counter()
            run_generation(cfg, sample)
            wall = time.perf_counter() - t0
        finally:
            PythiaGenerator.next_batch, PythiaGenerator.__init__ = orig, orig_init
    pool_key = tuple(cfg.pileup.settings)  # the pileup pool is overhead, not the compared process
    keys = [k for k in per_settings if k != pool_key]
    settings = [list(k) for k in keys]
    counts = [per_settings[k] for k in keys]
    full_rate = sum(counts) / wall
    bare = bare_pythia_rate(settings, counts, float(cfg.sample.ecm_gev))
    return {
        "case": name,
        "mu": mu,
        "accepted": n_events,
        "pythia_events": sum(counts),
        "wall_s": wall,
        "full_rate": full_rate,
        "bare_rate": bare,
        "ratio": full_rate / bare,
        "target": target,
        "accepted_rate": n_events / wall,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=400, help="accepted events per case")
    ap.add_argument("--cases", default="photons,wjets,wjets_mu50,qgjets")
    args = ap.parse_args()
    rows = [run_case(c, args.events) for c in args.cases.split(",")]
    print(
        f"{'case':<12}{'mu':>5}{'accepted':>10}{'pythia ev':>11}{'full ev/s':>11}{'bare ev/s':>11}{'ratio':>8}{'target':>8}  accepted/s"
    )
    ok = True
    for r in rows:
        flag = "ok" if r["ratio"] >= r["target"] else "BELOW"
        ok &= flag == "ok"
        print(
            f"{r['case']:<12}{r['mu']:>5.0f}{r['accepted']:>10}{r['pythia_events']:>11}{r['full_rate']:>11.1f}"
            f"{r['bare_rate']:>11.1f}{r['ratio']:>8.2f}{r['target']:>8.2f}  {r['accepted_rate']:.1f} {flag}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
