"""Tests of the datamodules, and the small photon-like ROOT files they write with uproot.

The helpers here write files with the generated photon sample's branches and cell shapes
(tree ``photons``; ``cells_EMB1`` (56, 3), ``cells_EMB2`` (7, 11), ``cells_EMB3`` (4, 11),
``cells_TileBar0`` (2, 3); kinematics, label, event number, shower shapes), small enough that
a test builds and reads a cache in well under a second.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from datamodules import CaloDataModule

SHAPES = {"EMB1": (56, 3), "EMB2": (7, 11), "EMB3": (4, 11), "TileBar0": (2, 3)}
AUX = ["ph_pt", "ph_eta", "mu", "Reta"]


def photon_events(n: int, first: int = 0, seed: int = 0, signal_fraction: float = 0.5) -> dict[str, np.ndarray]:
    """``n`` photon-like events with event numbers ``first, first + 1, ...``.

    Signal is harder in pT than background, so that reweighting has something to flatten;
    cells are non-negative (a shower profile plus |noise|) unless a test adds negative ones.
    """
    rng = np.random.default_rng(seed)
    label = (rng.random(n) < signal_fraction).astype(np.int32)
    pt = np.where(label == 1, rng.uniform(20e3, 150e3, n), 20e3 + rng.exponential(20e3, n)).clip(20e3, 150e3)
    out: dict[str, np.ndarray] = {
        "event_number": np.arange(first, first + n, dtype=np.int64),
        "ph_pt": pt.astype(np.float32),
        "ph_eta": rng.uniform(-1.37, 1.37, n).astype(np.float32),
        "truth_label": label,
        "mu": rng.uniform(0, 50, n).astype(np.float32),
        "Reta": rng.uniform(0.8, 1.0, n).astype(np.float32),
        "is_unhealthy": rng.random(n) < 0.1,
    }
    for name, (h, w) in SHAPES.items():
        out[f"cells_{name}"] = (rng.exponential(100.0, (n, h, w)) * rng.random((n, 1, 1))).astype(np.float32)
    return out


def write_tree(path: Path, arrays: Mapping[str, Any], tree: str = "photons") -> Path:
    """Write ``arrays`` (numpy, or awkward for jagged branches) as TTree ``tree`` to ``path``."""
    from calolab.generation.writer import write_tree as write

    write(Path(path), tree, arrays)
    return path


def write_sample(folder: Path, n_files: int = 2, per_file: int = 200, seed: int = 0, **kwargs) -> list[Path]:
    """``n_files`` files of ``per_file`` events each, event numbers consecutive across files."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        write_tree(folder / f"photons_{k}.root", photon_events(per_file, first=k * per_file, seed=seed + k, **kwargs))
        for k in range(n_files)
    ]


def fixed_inputs(shapes: Mapping[str, tuple[int, int]] = SHAPES) -> dict[str, dict]:
    return {name: {"branch": f"cells_{name}", "shape": list(shape)} for name, shape in shapes.items()}


def make_dm(tmp_path: Path, files: Any = None, **overrides) -> CaloDataModule:
    """A datamodule on ``tmp_path/data/*.root`` (write them first) caching into ``tmp_path/cache``."""
    kwargs: dict[str, Any] = {
        "files": files if files is not None else str(tmp_path / "data" / "*.root"),
        "tree": "photons",
        "inputs": fixed_inputs(),
        "aux": AUX,
        "cache_dir": str(tmp_path / "cache"),
        "batch_size": 16,
        "eval_batch_size": 64,
    }
    kwargs.update(overrides)
    return CaloDataModule(**kwargs)


def event_split(dm: CaloDataModule) -> dict[int, str]:
    """event number -> split name, from a datamodule's cache."""
    out = {}
    for split in ("train", "val", "test"):
        for ev in np.asarray(dm.arrays(split).aux["event_number"]).tolist():
            out[ev] = split
    return out
