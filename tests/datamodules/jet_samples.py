"""Small jet ntuples for the jet-image tests, written with the generator's writer.

The files have the generator's ``jets`` tree: scalars ``jet_pt`` (MeV), ``jet_eta``,
``jet_phi``, ``jet_m`` (MeV), ``jet_tau21``, ``jet_nconst``, ``truth_label``, ``mu``,
``event_number`` and the jagged constituents ``const_pt`` (MeV), ``const_eta``, ``const_phi``,
``const_charge``, ``const_is_pileup`` (counter ``nconst``). Signal jets have two prongs,
background jets one; the jet axis and mass are the constituents' four-momentum sum, and some
jets sit across phi = +-pi so that wrapping is exercised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from datamodules import JetImageDataModule
from tests.datamodules import write_tree


def jet_events(n: int, first: int = 0, seed: int = 0, constituent_name: str = "const") -> dict[str, Any]:
    """``n`` jets with event numbers ``first, first + 1, ...`` (dict of branches for write_tree)."""
    rng = np.random.default_rng(seed)
    label = (rng.random(n) < 0.5).astype(np.int32)
    counts = rng.integers(8, 30, n)
    jet = np.repeat(np.arange(n), counts)
    m = len(jet)
    axis_eta = rng.uniform(-1.5, 1.5, n)
    axis_phi = np.where(rng.random(n) < 0.3, np.pi - 0.05, rng.uniform(-np.pi, np.pi, n))
    # prong 1 at the axis; signal jets have a second prong 0.3-0.6 away carrying ~40% of the pT
    angle = rng.uniform(-np.pi, np.pi, n)
    sep = rng.uniform(0.3, 0.6, n)
    second = (label[jet] == 1) & (rng.random(m) < 0.4)
    centre_eta = axis_eta[jet] + np.where(second, sep[jet] * np.cos(angle[jet]), 0.0)
    centre_phi = axis_phi[jet] + np.where(second, sep[jet] * np.sin(angle[jet]), 0.0)
    eta = centre_eta + rng.normal(0, 0.08, m)
    phi = (centre_phi + rng.normal(0, 0.08, m) + np.pi) % (2 * np.pi) - np.pi
    pt = rng.exponential(10e3, m) + 500.0
    charge = rng.choice([-1.0, 0.0, 1.0], m, p=[0.3, 0.4, 0.3])
    # the axis and mass from the massless constituents' four-momentum sum
    px = np.bincount(jet, pt * np.cos(phi), n)
    py = np.bincount(jet, pt * np.sin(phi), n)
    pz = np.bincount(jet, pt * np.sinh(eta), n)
    e = np.bincount(jet, pt * np.cosh(eta), n)
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
        "jet_tau21": rng.uniform(0.1, 0.9, n).astype(np.float32),
        "jet_nconst": counts.astype(np.int32),
        "truth_label": label,
        "mu": rng.uniform(0, 50, n).astype(np.float32),
        "event_number": np.arange(first, first + n, dtype=np.int64),
        constituent_name: const,
    }


def write_jets(folder: Path, n_files: int = 2, per_file: int = 150, seed: int = 0, **kwargs) -> list[Path]:
    """``n_files`` jet files of ``per_file`` jets each, event numbers consecutive across files."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        write_tree(folder / f"jets_{k}.root", jet_events(per_file, first=k * per_file, seed=seed + k, **kwargs), "jets")
        for k in range(n_files)
    ]


def make_jet_dm(tmp_path: Path, files: Any = None, **overrides) -> JetImageDataModule:
    """A jet datamodule on ``tmp_path/data/*.root`` caching into ``tmp_path/cache``."""
    kwargs: dict[str, Any] = {
        "files": files if files is not None else str(tmp_path / "data" / "*.root"),
        "shape": [15, 15],
        "half_width": [0.75, 0.75],
        "channels": ["pt", "charged_count"],
        "centre": "centroid",
        "aux": ["jet_pt", "jet_m", "jet_nconst", "jet_width", "n_charged", "image_pt"],
        "cache_dir": str(tmp_path / "cache"),
        "batch_size": 16,
        "eval_batch_size": 64,
    }
    kwargs.update(overrides)
    return JetImageDataModule(**kwargs)
