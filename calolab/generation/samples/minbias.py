"""Minimum-bias sample: final-state particles of soft QCD events, e.g. as a reusable pileup pool.

The tree ``particles`` holds one entry per event with jagged ``part_*`` branches (MeV,
radians). ``calolab generate ... pileup.pool_dir=<dir of such a sample>`` overlays events from
it instead of generating a fresh pool.
"""

from __future__ import annotations

from collections.abc import Sequence

import awkward as ak
import numpy as np

from calolab.errors import ConfigError
from calolab.generation.pythia import PythiaGenerator
from calolab.generation.samples.base import ChunkSeeds, PileupSpec, Progress, Sample

MEV = 1000.0


class MinBiasSample(Sample):
    """Soft-QCD events; every event is "background" (``truth_label`` 0).

    Args:
        settings: Pythia settings of the minimum-bias process.
        batch_size: Pythia events per vectorised batch.
        ecm_gev: centre-of-mass energy.
    """

    tree = "particles"

    def __init__(self, *, settings: Sequence[str], batch_size: int = 500, ecm_gev: float = 13000.0):
        if batch_size <= 0:
            raise ConfigError(f"batch_size must be > 0, but got batch_size={batch_size}")
        self.settings, self.batch_size, self.ecm_gev = list(settings), int(batch_size), float(ecm_gev)

    def generate(self, n_events: int, n_signal: int, seeds: ChunkSeeds, pileup: PileupSpec, progress: Progress):
        gen = PythiaGenerator(self.settings, seeds.pythia(1), self.ecm_gev, name="minbias")
        batches = []
        for start in range(0, n_events, self.batch_size):
            k = min(self.batch_size, n_events - start)
            batches.append(gen.next_batch(k)[:k])
            progress(k)
        prt = ak.concatenate(batches, axis=0)
        part = ak.zip(
            {
                "pt": ak.values_astype(prt.pt * MEV, np.float32),
                "eta": ak.values_astype(prt.eta, np.float32),
                "phi": ak.values_astype(prt.phi, np.float32),
                "e": ak.values_astype(prt.e * MEV, np.float32),
                "m": ak.values_astype(prt.m * MEV, np.float32),
                "pid": ak.values_astype(prt.pid, np.int32),
                "charge": ak.values_astype(prt.charge, np.float32),
            }
        )
        return {
            "truth_label": np.zeros(n_events, np.int32),
            "mu": np.full(n_events, float(pileup.mu), np.float32),
            "part": ak.to_packed(part),
        }
