"""A fast parametrised detector: a tracker and a calorimeter of eta x phi towers.

Generator-level particles become reconstructed constituents in the way Delphes-style fast
simulations do it, vectorised over the whole batch of events:

* Tracks. Charged particles with |eta| < ``tracker_eta_max`` and pT > ``track_pt_min`` become
  tracks (100% efficiency). Their pT is smeared with sigma(pT)/pT = ``track_resolution`` * pT
  (+) ``track_resolution_constant``; direction and mass are kept. Their energy is *not* also
  put in the calorimeter (a perfect particle-flow energy-flow subtraction).
* Towers. Every other visible particle with |eta| < ``eta_max`` deposits its true energy in the
  tower containing its direction: photons and electrons in the EM part, everything else in the
  hadronic part. Soft charged particles below ``track_pt_min`` and charged particles outside the
  tracker therefore end up in towers. Each tower's EM and hadronic sums are smeared separately
  with sigma(E)/E = stochastic/sqrt(E) (+) constant, and towers whose smeared energy is below
  ``tower_e_min`` are dropped. A tower is massless; its direction is the true-energy-weighted
  barycentre of the particles in it (what a finer cell granularity inside the tower would
  measure), so it always lies inside the tower. ``is_pileup`` is set when more than half of the
  tower's true energy comes from pileup particles.
* Invisible. Neutrinos (and the stable BSM neutral weakly-interacting particles 1000022,
  1000039) leave no signal, and neither do muons outside the tracker (a minimum-ionising
  deposit; no muon system is modelled) nor anything beyond ``eta_max``.

All smearing is log-normal with the stated relative width and the true value as its mean,
which keeps energies positive without the bias that clipping a Gaussian at zero would bring.
The tower grid has round(2 eta_max / tower_size) bins in eta over [-eta_max, eta_max] and
round(2 pi / tower_size) bins in phi, so the actual widths are the nearest ones to
``tower_size`` that tile the acceptance exactly (0.1 x 0.0997 for the defaults).
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from calolab.errors import CalolabError, ConfigError, check_number
from calolab.generation.geometry import wrap_phi
from calolab.generation.pileup import ranges

#: Absolute PDG ids that leave no signal anywhere in the detector.
INVISIBLE_PIDS = (12, 14, 16, 1000022, 1000039)
#: Absolute PDG ids showering electromagnetically.
EM_PIDS = (11, 22)
MUON_PID = 13

CONSTITUENT_FIELDS = ("pt", "eta", "phi", "e", "m", "charge", "is_pileup")


def flat_field(events: ak.Array, name: str, dtype: type, default: float | None = None) -> np.ndarray:
    """Flatten one field of a jagged record array into a numpy array of ``dtype``.

    Args:
        events: N events, each a list of records.
        name: the field to flatten.
        dtype: the numpy dtype of the result.
        default: value used when the field is absent; ``None`` makes the field required.

    Raises:
        CalolabError: if the field is required and absent.
    """
    if name not in events.fields:
        if default is None:
            raise CalolabError(f"particle records must have a field {name!r}, but got {events.fields}")
        return np.full(int(ak.sum(ak.num(events, axis=1))), default, dtype=dtype)
    return np.asarray(ak.flatten(events[name], axis=1), dtype=dtype)


def _lognormal_smear(values: np.ndarray, relative_sigma: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Smear positive ``values`` log-normally with mean ``values`` and the given relative width."""
    s2 = np.log1p(relative_sigma**2)
    return values * np.exp(rng.standard_normal(values.shape) * np.sqrt(s2) - 0.5 * s2)


class Detector:
    """Tracker plus calorimeter towers turning particles into reconstructed constituents.

    Args:
        tower_size: target tower width in eta and phi.
        eta_max: calorimeter acceptance |eta| < eta_max.
        tracker_eta_max: tracker acceptance |eta| < tracker_eta_max (<= eta_max).
        track_pt_min: minimum pT of a reconstructed track in GeV.
        em_stochastic: EM stochastic term a in sigma/E = a/sqrt(E/GeV) (+) b.
        em_constant: EM constant term b.
        had_stochastic: hadronic stochastic term.
        had_constant: hadronic constant term.
        track_resolution: curvature term of the track resolution, sigma(pT)/pT per GeV of pT
            (ATLAS inner detector: ~0.05%).
        track_resolution_constant: multiple-scattering term of sigma(pT)/pT (~1%).
        tower_e_min: towers with smeared energy below this (GeV) are dropped; 0.5 GeV is the
            Delphes ATLAS/CMS cards' ECal tower threshold, and also keeps the number of towers
            (hence the clustering time) down at high pileup.
    """

    def __init__(
        self,
        *,
        tower_size: float = 0.1,
        eta_max: float = 4.9,
        tracker_eta_max: float = 2.5,
        track_pt_min: float = 0.5,
        em_stochastic: float = 0.10,
        em_constant: float = 0.007,
        had_stochastic: float = 0.50,
        had_constant: float = 0.03,
        track_resolution: float = 5e-4,
        track_resolution_constant: float = 0.01,
        tower_e_min: float = 0.5,
    ) -> None:
        check_number("tower_size", tower_size, 0.0, low_open=True)
        if tower_size > 1.0:
            raise ConfigError(f"tower_size must be in (0, 1], but got tower_size={tower_size}")
        check_number("eta_max", eta_max, 0.0, low_open=True)
        check_number("tracker_eta_max", tracker_eta_max, 0.0)
        if tracker_eta_max > eta_max:
            raise ConfigError(
                f"tracker_eta_max must be <= eta_max={eta_max}, but got tracker_eta_max={tracker_eta_max}"
            )
        for name, value in [
            ("track_pt_min", track_pt_min),
            ("em_stochastic", em_stochastic),
            ("em_constant", em_constant),
            ("had_stochastic", had_stochastic),
            ("had_constant", had_constant),
            ("track_resolution", track_resolution),
            ("track_resolution_constant", track_resolution_constant),
            ("tower_e_min", tower_e_min),
        ]:
            check_number(name, value, 0.0)
        self.tower_size = tower_size
        self.eta_max = eta_max
        self.tracker_eta_max = tracker_eta_max
        self.track_pt_min = track_pt_min
        self.em_stochastic = em_stochastic
        self.em_constant = em_constant
        self.had_stochastic = had_stochastic
        self.had_constant = had_constant
        self.track_resolution = track_resolution
        self.track_resolution_constant = track_resolution_constant
        self.tower_e_min = tower_e_min
        self.n_eta = max(1, round(2.0 * eta_max / tower_size))
        self.n_phi = max(1, round(2.0 * np.pi / tower_size))
        self.eta_width = 2.0 * eta_max / self.n_eta
        self.phi_width = 2.0 * np.pi / self.n_phi

    def tower_index(self, eta: np.ndarray, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the (eta, phi) tower indices of directions inside the acceptance."""
        i_eta = np.clip(((eta + self.eta_max) / self.eta_width).astype(np.int64), 0, self.n_eta - 1)
        i_phi = ((wrap_phi(phi) + np.pi) / self.phi_width).astype(np.int64) % self.n_phi
        return i_eta, i_phi

    def _resolution(self, energy: np.ndarray, stochastic: float, constant: float) -> np.ndarray:
        return np.sqrt(stochastic**2 / np.maximum(energy, 1e-12) + constant**2)

    def reconstruct(self, particles: ak.Array, rng: np.random.Generator) -> ak.Array:
        """Turn generator-level particles into tracks and towers.

        Args:
            particles: N events of particle records ``pt, eta, phi, e, m, pid, charge`` and
                optionally ``is_pileup`` (False if absent).
            rng: random generator for the smearing.

        Returns:
            N events of constituent records ``pt, eta, phi, e, m, charge, is_pileup``: each
            event's tracks (charge +-1, mass kept) followed by its towers (charge 0, massless).
        """
        n_events = len(particles)
        counts = np.asarray(ak.num(particles, axis=1), dtype=np.int64)
        # Keep only what the detector sees: in the calorimeter acceptance, not invisible, and
        # muons only inside the tracker.
        eta = flat_field(particles, "eta", np.float64)
        apid = np.abs(flat_field(particles, "pid", np.int64))
        with np.errstate(invalid="ignore"):
            abs_eta = np.abs(eta)
            in_tracker = abs_eta < self.tracker_eta_max
            seen = (abs_eta < self.eta_max) & ~np.isin(apid, INVISIBLE_PIDS) & ((apid != MUON_PID) | in_tracker)
        seen = np.flatnonzero(seen)  # (P_seen,) positions in the flat particle list
        event = np.repeat(np.arange(n_events), counts)[seen]
        eta, apid, in_tracker = eta[seen], apid[seen], in_tracker[seen]
        pt = flat_field(particles, "pt", np.float64)[seen]
        phi = flat_field(particles, "phi", np.float64)[seen]
        energy = flat_field(particles, "e", np.float64)[seen]
        mass = flat_field(particles, "m", np.float64)[seen]
        charge = flat_field(particles, "charge", np.float32)[seen]
        pileup = flat_field(particles, "is_pileup", np.bool_, default=False)[seen]

        is_track = (charge != 0) & in_tracker & (pt > self.track_pt_min)
        in_tower = ~is_track

        # Tracks: smear pT, keep direction and mass.
        t_pt = pt[is_track]
        t_sigma = np.hypot(self.track_resolution * t_pt, self.track_resolution_constant)
        t_pt = _lognormal_smear(t_pt, t_sigma, rng)
        t_eta = eta[is_track]
        t_mass = mass[is_track]
        tracks = {
            "pt": t_pt,
            "eta": t_eta,
            "phi": phi[is_track],
            "e": np.sqrt((t_pt * np.cosh(t_eta)) ** 2 + t_mass**2),
            "m": t_mass,
            "charge": charge[is_track],
            "is_pileup": pileup[is_track],
        }
        towers, tower_event = self._towers(
            event[in_tower],
            eta[in_tower],
            phi[in_tower],
            energy[in_tower],
            np.isin(apid[in_tower], EM_PIDS),
            pileup[in_tower],
            rng,
        )

        # Scatter into one contiguous buffer per field: each event's tracks, then its towers.
        n_tracks = np.bincount(event[is_track], minlength=n_events)
        n_towers = np.bincount(tower_event, minlength=n_events)
        offsets = np.concatenate([[0], np.cumsum(n_tracks + n_towers)])  # (N + 1,)
        track_pos = ranges(offsets[:-1], n_tracks)
        tower_pos = ranges(offsets[:-1] + n_tracks, n_towers)
        contents = []
        for name in CONSTITUENT_FIELDS:
            column = np.empty(offsets[-1], dtype=tracks[name].dtype)
            column[track_pos] = tracks[name]
            column[tower_pos] = towers[name]
            contents.append(ak.contents.NumpyArray(column))
        record = ak.contents.RecordArray(contents, list(CONSTITUENT_FIELDS))
        return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), record))

    def _towers(
        self,
        event: np.ndarray,
        eta: np.ndarray,
        phi: np.ndarray,
        energy: np.ndarray,
        is_em: np.ndarray,
        pileup: np.ndarray,
        rng: np.random.Generator,
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Sum deposits into towers, smear them, and return tower columns and their events."""
        i_eta, i_phi = self.tower_index(eta, phi)
        key = (event * self.n_eta + i_eta) * self.n_phi + i_phi
        keys, tower = np.unique(key, return_inverse=True)  # sorted, hence grouped by event
        n_towers = len(keys)

        def tower_sum(weights: np.ndarray) -> np.ndarray:
            return np.bincount(tower, weights=weights, minlength=n_towers)

        e_em = tower_sum(np.where(is_em, energy, 0.0))
        e_had = tower_sum(np.where(is_em, 0.0, energy))
        e_true = e_em + e_had
        e_pileup = tower_sum(np.where(pileup, energy, 0.0))

        t_eta_idx = (keys // self.n_phi) % self.n_eta
        t_phi_idx = keys % self.n_phi
        phi_centre = -np.pi + (t_phi_idx + 0.5) * self.phi_width
        weight = np.maximum(e_true, 1e-300)
        t_eta = tower_sum(energy * eta) / weight
        t_phi = wrap_phi(phi_centre + tower_sum(energy * wrap_phi(phi - phi_centre[tower])) / weight)
        # Guard against rounding pushing a barycentre across the tower's eta edge.
        eta_low = -self.eta_max + t_eta_idx * self.eta_width
        t_eta = np.clip(t_eta, eta_low, eta_low + self.eta_width)

        e_reco = np.zeros(n_towers)
        for part, stochastic, constant in [
            (e_em, self.em_stochastic, self.em_constant),
            (e_had, self.had_stochastic, self.had_constant),
        ]:
            has = part > 0
            sigma = self._resolution(part[has], stochastic, constant)
            e_reco[has] += _lognormal_smear(part[has], sigma, rng)

        keep = e_reco >= max(self.tower_e_min, 1e-12)
        t_eta = t_eta[keep]
        e_reco = e_reco[keep]
        towers = {
            "pt": e_reco / np.cosh(t_eta),
            "eta": t_eta,
            "phi": t_phi[keep],
            "e": e_reco,
            "m": np.zeros(len(e_reco)),
            "charge": np.zeros(len(e_reco), dtype=np.float32),
            "is_pileup": (e_pileup > 0.5 * e_true)[keep],
        }
        return towers, (keys // (self.n_eta * self.n_phi))[keep]
