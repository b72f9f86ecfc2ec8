"""The interface every generated sample implements, and the seeds a chunk of events gets.

A sample (photons, wjets, qgjets, minbias) is a class whose constructor arguments are exactly
the keys of its ``conf/sample/<name>.yaml``. The runner cuts the requested events into chunks
of fixed size and calls :meth:`Sample.generate` once per chunk with seeds derived from the
global seed and the chunk index only, so the physics content does not depend on how many
worker processes share the chunks.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import awkward as ak
import numpy as np

from calolab.errors import ConfigError
from calolab.generation.pythia import pythia_seed

Progress = Callable[[int], None]


@dataclass(frozen=True)
class ChunkSeeds:
    """Independent random streams of one chunk: one per Pythia process and one for numpy."""

    seed: int
    chunk: int

    def pythia(self, stream: int) -> int:
        return pythia_seed(self.seed, self.chunk, stream)

    def rng(self, stream: int = 0) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, self.chunk, 1000 + stream]))


@dataclass(frozen=True)
class PileupSpec:
    """Pileup of a generation: mean number of interactions and (for jets) the overlay pool."""

    mu: float
    pool: Any | None = None  # calolab.generation.pileup.PileupPool when the sample overlays events


class Sample(abc.ABC):
    """A generated sample: produces the branches of one TTree for a chunk of events."""

    #: name of the TTree written
    tree: str
    #: whether the runner must build a minimum-bias pool for mu > 0
    needs_pileup_pool: bool = False

    @abc.abstractmethod
    def generate(
        self, n_events: int, n_signal: int, seeds: ChunkSeeds, pileup: PileupSpec, progress: Progress
    ) -> dict[str, np.ndarray | ak.Array]:
        """Generate ``n_events`` accepted events, ``n_signal`` of them signal, in random order.

        Returns the branches (units MeV and radians), without ``event_number`` (the runner
        sets it). ``progress(k)`` is called as events are accepted.
        """


def check_fraction(name: str, value: float) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{name} must be between 0 and 1, but got {name}={value}")
    return float(value)


def check_window(name: str, low: float, high: float | None) -> None:
    if low < 0 or (high is not None and high <= low):
        raise ConfigError(f"{name} window must satisfy 0 <= min < max, but got [{low}, {high}]")


def shuffle_together(rng: np.random.Generator, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate branch dicts (signal, background) and shuffle the events in one permutation."""
    keys = parts[0].keys()
    merged: dict[str, Any] = {}
    total = sum(len(next(iter(p.values()))) for p in parts)
    order = rng.permutation(total)
    for k in keys:
        vals = [p[k] for p in parts]
        if isinstance(vals[0], ak.Array):
            merged[k] = ak.concatenate(vals, axis=0)[order]
        else:
            merged[k] = np.concatenate(vals, axis=0)[order]
    return merged
