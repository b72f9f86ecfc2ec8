"""Pileup overlay from a pre-generated pool of minimum-bias events.

Generating ~50 minimum-bias events for every hard event would cost far more than the hard
event itself, so the usual speed-up (see REFERENCE.md, "Pileup") is used: a pool of minimum-bias
events is generated once, and each hard event receives Poisson(mu) of them drawn with
replacement, each rotated by its own random azimuth so that re-used pool events do not repeat
the same pattern. Everything is vectorised over the whole batch: the draws become flat index
arrays into the pool and the result is assembled with numpy scatters into one contiguous
``ListOffsetArray`` (hard particles first in each event), which is what ``ak.concatenate``
along axis 1 would give, without its lazy index layer.
"""

from __future__ import annotations

import math

import awkward as ak
import numpy as np

from calolab.errors import CalolabError, ConfigError
from calolab.generation.geometry import wrap_phi

#: Particle record fields and the dtypes the pool stores them with.
PARTICLE_DTYPES: dict[str, np.dtype] = {
    "pt": np.dtype(np.float64),
    "eta": np.dtype(np.float64),
    "phi": np.dtype(np.float64),
    "e": np.dtype(np.float64),
    "m": np.dtype(np.float64),
    "pid": np.dtype(np.int32),
    "charge": np.dtype(np.float32),
    "is_pileup": np.dtype(np.bool_),
}


def with_pileup_flag(particles: ak.Array, value: bool = False) -> ak.Array:
    """Return ``particles`` with an ``is_pileup`` field, adding one set to ``value`` if absent."""
    if "is_pileup" in particles.fields:
        return particles
    flag = ak.values_astype(ak.zeros_like(particles.pt), np.bool_)
    if value:
        flag = ~flag
    return ak.with_field(particles, flag, "is_pileup")


class PileupPool:
    """A fixed pool of minimum-bias events, overlaid on hard events as pileup.

    Args:
        particles: the minimum-bias events, one list of particle records per event, with at
            least the fields ``pt, eta, phi, e, m, pid, charge``. Their ``is_pileup`` field, if
            any, is ignored: every pool particle is marked as pileup.

    Raises:
        ConfigError: if the pool holds no event or lacks a field.
    """

    def __init__(self, particles: ak.Array) -> None:
        missing = [f for f in PARTICLE_DTYPES if f != "is_pileup" and f not in particles.fields]
        if missing:
            raise ConfigError(
                f"PileupPool particles must have the fields {sorted(PARTICLE_DTYPES)}, "
                f"but the fields {missing} are missing (got {particles.fields})"
            )
        if len(particles) == 0:
            raise ConfigError("PileupPool needs at least one minimum-bias event, but got 0")
        self._counts = np.asarray(ak.num(particles, axis=1), dtype=np.int64)  # (P,)
        self._offsets = np.concatenate([[0], np.cumsum(self._counts)])  # (P + 1,)
        self._flat: dict[str, np.ndarray] = {
            name: np.asarray(ak.flatten(particles[name], axis=1), dtype=dtype)
            for name, dtype in PARTICLE_DTYPES.items()
            if name != "is_pileup"
        }
        self._flat["is_pileup"] = np.ones(self._offsets[-1], dtype=np.bool_)

    @property
    def n_events(self) -> int:
        """Number of minimum-bias events in the pool."""
        return len(self._counts)

    @property
    def mean_multiplicity(self) -> float:
        """Mean number of particles per pool event."""
        return float(self._counts.mean())

    def overlay(self, hard: ak.Array, mu: float, rng: np.random.Generator) -> ak.Array:
        """Add Poisson(``mu``) pool events, each rotated by a random phi, to every hard event.

        Args:
            hard: hard-scatter events (particle records; ``is_pileup`` added as False if absent).
            mu: mean number of pileup interactions per event, >= 0.
            rng: random generator for the Poisson counts, the pool draws and the rotations.

        Returns:
            The events with the same record fields as ``hard`` (plus ``is_pileup``), the
            pileup particles appended after the hard ones with ``is_pileup`` True. With
            ``mu == 0`` the (flagged) hard events are returned as they are.

        Raises:
            ConfigError: if ``mu`` is negative or not finite.
            CalolabError: if ``hard`` has a field the pool does not provide.
        """
        if not (math.isfinite(mu) and mu >= 0.0):
            raise ConfigError(f"mu must be a finite number >= 0, but got mu={mu}")
        hard = with_pileup_flag(hard, False)
        if mu == 0.0:
            return hard
        unknown = [f for f in hard.fields if f not in self._flat]
        if unknown:
            raise CalolabError(
                f"hard events may only have the fields {sorted(self._flat)} to overlay pileup, "
                f"but they also have {unknown}"
            )
        n_events = len(hard)
        n_pileup = rng.poisson(mu, n_events)  # (N,) pool events per hard event
        picks = rng.integers(0, self.n_events, int(n_pileup.sum()))  # (K,) pool event ids
        rotation = rng.uniform(-np.pi, np.pi, picks.size)  # (K,)

        sizes = self._counts[picks]  # (K,) particles per drawn event
        index = ranges(self._offsets[picks], sizes)  # (M,) pool particle of each overlay particle
        event_of_pick = np.repeat(np.arange(n_events), n_pileup)
        counts = np.bincount(event_of_pick, weights=sizes, minlength=n_events).astype(np.int64)

        # Scatter hard and pileup particles into one contiguous buffer per field: hard first.
        hard_counts = np.asarray(ak.num(hard, axis=1), dtype=np.int64)
        out_offsets = np.concatenate([[0], np.cumsum(hard_counts + counts)])  # (N + 1,)
        hard_pos = ranges(out_offsets[:-1], hard_counts)
        pileup_pos = ranges(out_offsets[:-1] + hard_counts, counts)
        columns = {}
        for name in hard.fields:
            hard_values = np.asarray(ak.flatten(hard[name], axis=1))
            pool_values = self._flat[name][index]
            if name == "phi":
                pool_values = wrap_phi(pool_values + np.repeat(rotation, sizes))
            column = np.empty(out_offsets[-1], dtype=np.result_type(hard_values, pool_values))
            column[hard_pos] = hard_values
            column[pileup_pos] = pool_values
            columns[name] = ak.contents.NumpyArray(column)
        record = ak.contents.RecordArray(list(columns.values()), list(columns))
        return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(out_offsets), record))


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(start, start + length)`` for every (start, length) pair."""
    first = np.cumsum(lengths) - lengths
    return np.repeat(starts - first, lengths) + np.arange(lengths.sum())


def draw_near(
    pool: PileupPool,
    eta: np.ndarray,
    phi: np.ndarray,
    mu: np.ndarray,
    reach: tuple[float, float],
    rng: np.random.Generator,
    impact_phi=None,
) -> tuple[ak.Array, np.ndarray]:
    """Pileup particles that can reach each candidate's calorimeter windows.

    Every candidate ``i`` receives Poisson(``mu[i]``) pool events drawn with replacement, each
    rotated by its own random azimuth (as :meth:`PileupPool.overlay`); only their particles with
    ``|eta - eta[i]| < reach[0]`` and ``|phi_at_calo - phi[i]| < reach[1]`` are returned, the
    others cannot deposit in a window around the candidate. ``impact_phi(pt, phi, charge)``
    gives the azimuth at the calorimeter (solenoid bending); None: the direction's own.

    Returns:
        (N lists of particle records with the pool's fields (``is_pileup`` True), (N,) int64
        number of pileup interactions drawn per candidate).
    """
    eta, phi, mu = (np.asarray(a, np.float64) for a in (eta, phi, mu))
    if not (np.all(np.isfinite(mu)) and np.all(mu >= 0.0)):
        raise ConfigError(f"mu must be finite numbers >= 0, but got min(mu)={mu.min() if mu.size else None}")
    n = len(eta)
    n_pileup = rng.poisson(mu)  # (N,)
    picks = rng.integers(0, pool.n_events, int(n_pileup.sum()))  # (K,)
    rotation = rng.uniform(-np.pi, np.pi, picks.size)  # (K,)
    sizes = pool._counts[picks]
    index = ranges(pool._offsets[picks], sizes)  # (M,)
    owner = np.repeat(np.repeat(np.arange(n), n_pileup), sizes)  # (M,) candidate of each particle
    p_eta = pool._flat["eta"][index]
    near = np.abs(p_eta - eta[owner]) < reach[0]
    index, owner = index[near], owner[near]
    p_phi = wrap_phi(pool._flat["phi"][index] + np.repeat(rotation, sizes)[near])
    at_calo = p_phi if impact_phi is None else impact_phi(pool._flat["pt"][index], p_phi, pool._flat["charge"][index])
    near = np.abs(wrap_phi(at_calo - phi[owner])) < reach[1]
    index, owner, p_phi = index[near], owner[near], p_phi[near]
    order = np.argsort(owner, kind="stable")
    index, owner, p_phi = index[order], owner[order], p_phi[order]
    columns = {name: values[index] for name, values in pool._flat.items()}
    columns["phi"] = p_phi
    counts = np.bincount(owner, minlength=n).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    record = ak.contents.RecordArray([ak.contents.NumpyArray(v) for v in columns.values()], list(columns))
    return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), record)), n_pileup.astype(np.int64)


def deposit_in_windows(
    calorimeter, particles: ak.Array, window_eta: np.ndarray, window_phi: np.ndarray, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Deposit ``particles`` (N lists) in the calorimeter windows centred on (``window_eta``, ``window_phi``).

    The particles go through the calorimeter's own response (showers, MIPs, bending, sampling
    fluctuations in the EM layers) but get no noise: the result is the energy they add to the
    cells of the windows :meth:`~calolab.generation.calorimeter.EMCalorimeter.simulate` returned
    (its ``window_eta``/``window_phi``). Sampling fluctuations are Gamma-distributed with a common
    scale, so fluctuating these deposits apart from the hard event's is the same in distribution
    as fluctuating their sum. Cells no particle reaches stay exactly 0.

    Returns:
        ``cells_<layer>`` -> (N, n_eta, n_phi) float32 MeV for every layer of the calorimeter.
    """
    from calolab.generation.geometry import EM_LAYERS, GRIDS, Window
    from calolab.generation.showers import sampling_fluctuations

    n = len(window_eta)
    centre_phi = wrap_phi(np.asarray(window_phi, np.float64) - np.pi)
    p = calorimeter._flatten(particles, n)
    event, eta, phi, energy, layer = calorimeter._deposits(p, np.asarray(window_eta, np.float64), centre_phi, rng)
    out = {}
    for i, name in enumerate(calorimeter.layers):
        sel = layer == i
        window = Window.centred_on(GRIDS[name], calorimeter.windows[name], window_eta, window_phi)
        cells = window.deposit(event[sel], eta[sel], phi[sel], energy[sel])
        if name in EM_LAYERS:
            cells = sampling_fluctuations(cells, calorimeter.sampling_term, rng)
        out[f"cells_{name}"] = np.asarray(cells, np.float32)
    return out
