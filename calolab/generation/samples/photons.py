"""Photon-identification sample: prompt photons against photon candidates from QCD jets.

Signal is Pythia's ``PromptPhoton:all``: the candidate is the leading final-state photon that
does not come from a hadron decay. Background is ``HardQCD:all``: the candidate is the leading
hadron (pi0, eta, omega, ...) whose decay photons reach the calorimeter, the classic jet faking
a photon. Every final-state particle within ``cone`` of the candidate is deposited in the
parametrised EM barrel (:class:`calolab.generation.calorimeter.EMCalorimeter`), and the
standard shower shapes are computed from the cells by the same function the evaluation applies
to any user's ntuple.

Pileup: by default (and always at mu = 0) it is the calorimeter's extra Gaussian noise of width
``pileup_noise_mev * sqrt(mu)`` per cell. With ``pileup_overlay: true`` it is real pileup
energy instead: Poisson(mu) minimum-bias events of the generation's pool
(:mod:`calolab.generation.pileup`), each rotated by a random azimuth, whose particles near the
candidate go through the same calorimeter response and are added to the cells of the hard
event's windows (which stay centred on the hard event; the Gaussian pileup noise is then off,
electronic noise stays). ``pileup_paired: true`` also writes the hard event alone,
``cells_<layer>_nopu`` and ``ph_pt_nopu``: the same event, the same random numbers, so the two
differ only in the cells a pileup deposit reaches (what a pileup-denoising auto-encoder trains
on). ``pileup_mu_spread: true`` draws each candidate's mu uniformly in [0, pileup.mu] (the
``mu`` branch holds it; ``n_pileup`` the interactions drawn), so that one sample covers the mu
range. With the overlay the pileup draws come from their own random stream and candidates are
selected on the hard event's cluster E_T: the same seed gives the same hard events, cell for
cell, at every mu (at mu = 0, those of the default sample).
"""

from __future__ import annotations

from collections.abc import Sequence

import awkward as ak
import numpy as np

from calolab.errors import ConfigError, GenerationError
from calolab.generation.geometry import wrap_phi
from calolab.generation.pileup import deposit_in_windows, draw_near
from calolab.generation.pythia import PythiaGenerator
from calolab.generation.samples.base import (
    ChunkSeeds,
    PileupSpec,
    Progress,
    Sample,
    check_fraction,
    check_window,
    shuffle_together,
)
from calolab.physics.shower_shapes import compute_shower_shapes

MEV = 1000.0
#: Pythia stops asking for more events after this many batches without reaching the target
MAX_BATCHES = 10_000


def core_cluster_et(layers: dict[str, np.ndarray], eta: np.ndarray) -> np.ndarray:
    """E_T (MeV) of the 3x7 (eta x phi, middle-cell units) core cluster, as ATLAS barrel photons.

    The windows are centred on the hottest EMB2 cell; the core is the central 3x7 EMB2 cells,
    the 24 strips of EMB1 under them (all 3 phi cells), and EMB3's central 2x7 cells. The full
    windows hold the surrounding jet activity too, which belongs to isolation, not to the photon.
    """

    def central(a: np.ndarray, n_eta: int, n_phi: int) -> np.ndarray:
        _, h, w = a.shape
        i0, j0 = (h - n_eta) // 2, (w - n_phi) // 2
        return a[:, i0 : i0 + n_eta, j0 : j0 + n_phi].sum(axis=(1, 2))

    e = central(layers["cells_EMB2"], 3, 7)
    e = e + central(layers["cells_EMB1"], 24, layers["cells_EMB1"].shape[2])
    e = e + central(layers["cells_EMB3"], 2, 7)
    return (e / np.cosh(eta)).astype(np.float32)


class PhotonSample(Sample):
    """Prompt photons (signal, label 1) and photon candidates in QCD jets (background, label 0).

    A candidate is seeded at truth level (the prompt photon, or the leading hadron decaying to
    photons with pT above ``seed_pt_min_gev``), its surroundings are deposited in the
    calorimeter, and it is kept when the reconstructed 3x7 core cluster has E_T in
    [``et_min_gev``, ``et_max_gev``] and |eta| < ``eta_max``: as in ATLAS, a jet fakes a
    photon through its EM cluster, which holds more than the seed pi0.

    Args:
        signal_settings: Pythia settings of the signal process.
        background_settings: Pythia settings of the background process.
        calorimeter: the calorimeter model that turns particles into cells.
        et_min_gev, et_max_gev: window on the reconstructed cluster E_T.
        eta_max: |eta| acceptance of the cluster (barrel: 1.37).
        seed_pt_min_gev: minimum truth pT of a candidate's seed (photon or hadron).
        cone: particles within this Delta R of the seed are deposited.
        signal_fraction: fraction of signal events in the sample.
        batch_size: Pythia events generated per vectorised batch.
        ecm_gev: centre-of-mass energy.
        pileup_overlay: overlay minimum-bias events (real pileup deposits) instead of the
            Gaussian pileup noise (see the module docstring).
        pileup_paired: with ``pileup_overlay``, also write the pileup-free twin of every event
            (``cells_<layer>_nopu``, ``ph_pt_nopu``).
        pileup_mu_spread: with ``pileup_overlay``, each candidate's mu uniform in [0, pileup.mu].
    """

    tree = "photons"

    def __init__(
        self,
        *,
        signal_settings: Sequence[str],
        background_settings: Sequence[str],
        calorimeter,
        et_min_gev: float = 20.0,
        et_max_gev: float = 150.0,
        eta_max: float = 1.37,
        seed_pt_min_gev: float = 8.0,
        cone: float = 0.4,
        signal_fraction: float = 0.5,
        batch_size: int = 200,
        ecm_gev: float = 13000.0,
        pileup_overlay: bool = False,
        pileup_paired: bool = False,
        pileup_mu_spread: bool = False,
    ):
        check_window("et_min_gev/et_max_gev", et_min_gev, et_max_gev)
        if not 0 < eta_max <= 1.4:
            raise ConfigError(f"eta_max must be in (0, 1.4] (EM barrel), but got eta_max={eta_max}")
        if not 0 < seed_pt_min_gev <= et_max_gev:
            raise ConfigError(f"seed_pt_min_gev must be in (0, et_max_gev], but got seed_pt_min_gev={seed_pt_min_gev}")
        if not 0 < cone <= 1.0:
            raise ConfigError(f"cone must be in (0, 1], but got cone={cone}")
        if batch_size <= 0:
            raise ConfigError(f"batch_size must be > 0, but got batch_size={batch_size}")
        self.signal_settings = list(signal_settings)
        self.background_settings = list(background_settings)
        self.calorimeter = calorimeter
        self.et_min, self.et_max, self.eta_max = float(et_min_gev), float(et_max_gev), float(eta_max)
        self.seed_pt_min = float(seed_pt_min_gev)
        self.cone = float(cone)
        self.signal_fraction = check_fraction("signal_fraction", signal_fraction)
        self.batch_size = int(batch_size)
        self.ecm_gev = float(ecm_gev)
        for name, value in (
            ("pileup_overlay", pileup_overlay),
            ("pileup_paired", pileup_paired),
            ("pileup_mu_spread", pileup_mu_spread),
        ):
            if not isinstance(value, bool | np.bool_):
                raise ConfigError(f"{name} must be true or false, but got {name}={value!r}")
        if (pileup_paired or pileup_mu_spread) and not pileup_overlay:
            what = "pileup_paired" if pileup_paired else "pileup_mu_spread"
            raise ConfigError(
                f"{what}=true needs pileup_overlay=true (real pileup deposits), but got pileup_overlay=false"
            )
        if pileup_overlay and getattr(calorimeter, "unhealthy_fraction", 0.0) > 0.0:
            raise ConfigError(
                "pileup_overlay=true needs calorimeter.unhealthy_fraction=0 (a dead cell would receive pileup energy), "
                f"but got unhealthy_fraction={calorimeter.unhealthy_fraction}"
            )
        self.pileup_overlay = bool(pileup_overlay)
        self.pileup_paired = bool(pileup_paired)
        self.pileup_mu_spread = bool(pileup_mu_spread)

    @property
    def needs_pileup_pool(self) -> bool:  # the runner builds the minimum-bias pool for mu > 0
        return self.pileup_overlay

    # -- truth seeds ------------------------------------------------------------------------
    def _seeded(self, pt, eta):
        # a little margin in eta: the cluster barycentre may move across the acceptance edge
        return (pt >= self.seed_pt_min) & (pt <= self.et_max * 1.5) & (np.abs(eta) < self.eta_max + 0.05)

    def _signal_seeds(self, prt: ak.Array) -> dict[str, np.ndarray]:
        """Leading final-state photon not from a hadron decay, per event."""
        ph = prt[(prt.pid == 22) & (np.abs(prt.mother_pid) < 100)]
        lead = ak.firsts(ph[ak.argmax(ph.pt, axis=1, keepdims=True)])
        out = {k: ak.to_numpy(ak.fill_none(lead[k], 0.0)) for k in ("pt", "eta", "phi")}
        out["pdgid"] = np.full(len(out["pt"]), 22, np.int32)
        return out

    def _background_seeds(self, prt: ak.Array) -> dict[str, np.ndarray]:
        """Leading hadron decaying to photons (pi0, eta, ...), from its photons' summed momenta."""
        counts = ak.to_numpy(ak.num(prt, axis=1))
        event = np.repeat(np.arange(len(counts)), counts)
        flat = ak.flatten(prt)
        pid, mpid = ak.to_numpy(flat.pid), ak.to_numpy(flat.mother_pid)
        sel = (pid == 22) & (np.abs(mpid) > 100)
        ev, mother = event[sel], ak.to_numpy(flat.mother)[sel]
        pt, eta, phi = (ak.to_numpy(flat[f])[sel] for f in ("pt", "eta", "phi"))
        key = ev.astype(np.int64) * 1_000_000 + mother
        groups, inv = np.unique(key, return_inverse=True)
        px = np.bincount(inv, pt * np.cos(phi), len(groups))
        py = np.bincount(inv, pt * np.sin(phi), len(groups))
        pz = np.bincount(inv, pt * np.sinh(eta), len(groups))
        gpt, gphi = np.hypot(px, py), np.arctan2(py, px)
        geta = np.arcsinh(pz / np.maximum(gpt, 1e-9))
        gev = groups // 1_000_000
        gpdg = np.zeros(len(groups), np.int32)
        gpdg[inv] = mpid[sel]
        # leading seeded group per event: sort by (event, -pt), keep the first of each event
        idx = np.flatnonzero(self._seeded(gpt, geta))
        idx = idx[np.lexsort((-gpt[idx], gev[idx]))]
        first = idx[np.r_[True, gev[idx][1:] != gev[idx][:-1]]] if len(idx) else idx
        n = len(counts)
        out = {k: np.zeros(n) for k in ("pt", "eta", "phi")}
        out["pdgid"] = np.zeros(n, np.int32)
        for k, v in (("pt", gpt), ("eta", geta), ("phi", gphi), ("pdgid", gpdg)):
            out[k][gev[first]] = v[first]
        return out

    # -- candidates -------------------------------------------------------------------------
    def _simulate(
        self, seeds, near, label: int, mu: float, rng: np.random.Generator, pool=None, pileup_rng=None
    ) -> dict[str, np.ndarray]:
        n = len(seeds["pt"])
        mus = np.full(n, mu)
        if not self.pileup_overlay:
            cells = self.calorimeter.simulate(near, seeds["eta"], seeds["phi"], mus, rng)
            layers = {k: v for k, v in cells.items() if k.startswith("cells_")}
            extra = {}
        else:
            if self.pileup_mu_spread:
                mus = pileup_rng.uniform(0.0, mu, n)
            # the hard event with electronic noise only; pileup comes as deposits
            cells = self.calorimeter.simulate(near, seeds["eta"], seeds["phi"], np.zeros(n), rng)
            clean = {k: v for k, v in cells.items() if k.startswith("cells_")}
            n_pileup = np.zeros(n, np.int64)
            layers = clean
            if pool is not None and mu > 0:
                centre_phi = wrap_phi(cells["window_phi"] - np.pi)
                cal = self.calorimeter
                pileup, n_pileup = draw_near(
                    pool, cells["window_eta"], centre_phi, mus, cal._reach, pileup_rng, cal.impact_phi
                )
                added = deposit_in_windows(cal, pileup, cells["window_eta"], cells["window_phi"], pileup_rng)
                layers = {k: clean[k] + added[k] for k in clean}
            extra = {"n_pileup": n_pileup.astype(np.int32), "ph_pt_nopu": core_cluster_et(clean, cells["cl_eta"])}
            if self.pileup_paired:
                extra.update({f"{k}_nopu": np.asarray(v, np.float32) for k, v in clean.items()})
        out = {
            "ph_pt": core_cluster_et(layers, cells["cl_eta"]),
            "ph_eta": np.asarray(cells["cl_eta"], np.float32),
            "ph_phi": np.asarray(cells["cl_phi"], np.float32),
            "truth_pt": (seeds["pt"] * MEV).astype(np.float32),
            "truth_eta": seeds["eta"].astype(np.float32),
            "truth_label": np.full(n, label, np.int32),
            "truth_pdgid": seeds["pdgid"].astype(np.int32),
            "mu": mus.astype(np.float32),
            "mc_weight": seeds["weight"].astype(np.float32),
            "is_unhealthy": np.asarray(cells["is_unhealthy"], bool),
        }
        out.update({k: np.asarray(v, np.float32) for k, v in layers.items()})
        out.update(extra)
        return out

    def _collect(
        self,
        gen: PythiaGenerator,
        n_wanted: int,
        label: int,
        mu: float,
        rng,
        progress: Progress,
        pool=None,
        pileup_rng=None,
    ):
        """Generate, seed, simulate and select until ``n_wanted`` candidates are accepted."""
        parts, have = [], 0
        for _ in range(MAX_BATCHES):
            if have >= n_wanted:
                break
            prt = gen.next_batch(self.batch_size)
            seeds = self._signal_seeds(prt) if label == 1 else self._background_seeds(prt)
            idx = np.flatnonzero(self._seeded(seeds["pt"], seeds["eta"]))
            if len(idx) == 0:
                continue
            sub = prt[idx]
            seeds = {k: v[idx] for k, v in seeds.items()} | {"weight": gen.last_weights[idx]}
            dr2 = (sub.eta - seeds["eta"]) ** 2 + wrap_phi(sub.phi - seeds["phi"]) ** 2
            cand = self._simulate(seeds, sub[dr2 < self.cone**2], label, mu, rng, pool, pileup_rng)
            # with overlaid pileup: selected on the hard event, so every mu keeps the same events
            et = cand["ph_pt_nopu" if self.pileup_overlay else "ph_pt"] / MEV
            keep = np.flatnonzero((et >= self.et_min) & (et <= self.et_max) & (np.abs(cand["ph_eta"]) < self.eta_max))
            keep = keep[: n_wanted - have]
            if len(keep):
                parts.append({k: v[keep] for k, v in cand.items()})
                have += len(keep)
                progress(len(keep))
        else:
            raise GenerationError(
                f"photons: only {have} of {n_wanted} {'signal' if label else 'background'} candidates after "
                f"{MAX_BATCHES} batches; is the E_T window [{self.et_min}, {self.et_max}] GeV reachable?"
            )
        merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        if self.pileup_overlay and not self.pileup_paired:
            merged.pop("ph_pt_nopu")
        layers = {k: v for k, v in merged.items() if k.startswith("cells_") and not k.endswith("_nopu")}
        merged.update(
            {k: np.asarray(v, np.float32) for k, v in compute_shower_shapes(layers, merged["ph_eta"]).items()}
        )
        return merged

    def generate(self, n_events: int, n_signal: int, seeds: ChunkSeeds, pileup: PileupSpec, progress: Progress):
        parts = []
        rng = seeds.rng(0)
        pileup_rng = seeds.rng(3)  # overlaid pileup: its own stream, so the hard events do not depend on mu
        for label, settings, stream in ((1, self.signal_settings, 1), (0, self.background_settings, 2)):
            n = n_signal if label == 1 else n_events - n_signal
            if n <= 0:
                continue
            name = f"photons/{'signal' if label else 'background'}"
            gen = PythiaGenerator(settings, seeds.pythia(stream), self.ecm_gev, name=name)
            parts.append(self._collect(gen, n, label, float(pileup.mu), rng, progress, pileup.pool, pileup_rng))
        return shuffle_together(rng, parts)
