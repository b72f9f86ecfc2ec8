"""Photon-identification sample: prompt photons against photon candidates from QCD jets.

Signal is Pythia's ``PromptPhoton:all``: the candidate is the leading final-state photon that
does not come from a hadron decay. Background is ``HardQCD:all``: the candidate is the leading
hadron (pi0, eta, omega, ...) whose decay photons reach the calorimeter, the classic jet faking
a photon. Every final-state particle within ``cone`` of the candidate is deposited in the
parametrised EM barrel (:class:`calolab.generation.calorimeter.EMCalorimeter`), and the
standard shower shapes are computed from the cells by the same function the evaluation applies
to any user's ntuple.
"""

from __future__ import annotations

from collections.abc import Sequence

import awkward as ak
import numpy as np

from calolab.errors import ConfigError, GenerationError
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


def _delta_phi(a, b):
    return (a - b + np.pi) % (2 * np.pi) - np.pi


class PhotonSample(Sample):
    """Prompt photons (signal, label 1) and photon candidates in QCD jets (background, label 0).

    Args:
        signal_settings: Pythia settings of the signal process.
        background_settings: Pythia settings of the background process.
        calorimeter: the calorimeter model that turns particles into cells.
        et_min_gev, et_max_gev: window on the true candidate E_T.
        eta_max: |eta| acceptance of the candidate (barrel: 1.37).
        cone: particles within this Delta R of the candidate are deposited.
        signal_fraction: fraction of signal events in the sample.
        batch_size: Pythia events generated per vectorised batch.
        ecm_gev: centre-of-mass energy.
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
        cone: float = 0.4,
        signal_fraction: float = 0.5,
        batch_size: int = 200,
        ecm_gev: float = 13000.0,
    ):
        check_window("et_min_gev/et_max_gev", et_min_gev, et_max_gev)
        if not 0 < eta_max <= 1.4:
            raise ConfigError(f"eta_max must be in (0, 1.4] (EM barrel), but got eta_max={eta_max}")
        if not 0 < cone <= 1.0:
            raise ConfigError(f"cone must be in (0, 1], but got cone={cone}")
        if batch_size <= 0:
            raise ConfigError(f"batch_size must be > 0, but got batch_size={batch_size}")
        self.signal_settings = list(signal_settings)
        self.background_settings = list(background_settings)
        self.calorimeter = calorimeter
        self.et_min, self.et_max, self.eta_max = float(et_min_gev), float(et_max_gev), float(eta_max)
        self.cone = float(cone)
        self.signal_fraction = check_fraction("signal_fraction", signal_fraction)
        self.batch_size = int(batch_size)
        self.ecm_gev = float(ecm_gev)

    # -- candidates -------------------------------------------------------------------------
    def _in_window(self, pt, eta):
        return (pt >= self.et_min) & (pt <= self.et_max) & (np.abs(eta) < self.eta_max)

    def _signal_candidates(self, prt: ak.Array) -> dict[str, np.ndarray]:
        """Leading final-state photon not from a hadron decay, per event."""
        ph = prt[(prt.pid == 22) & (np.abs(prt.mother_pid) < 100)]
        best = ak.argmax(ph.pt, axis=1, keepdims=True)
        lead = ak.firsts(ph[best])
        pt = ak.to_numpy(ak.fill_none(lead.pt, 0.0))
        eta = ak.to_numpy(ak.fill_none(lead.eta, 0.0))
        phi = ak.to_numpy(ak.fill_none(lead.phi, 0.0))
        return {"pt": pt, "eta": eta, "phi": phi, "pdgid": np.full(len(pt), 22, np.int32)}

    def _background_candidates(self, prt: ak.Array) -> dict[str, np.ndarray]:
        """Leading hadron decaying to photons (pi0, eta, ...), from its photons' summed momenta."""
        counts = ak.to_numpy(ak.num(prt, axis=1))
        event = np.repeat(np.arange(len(counts)), counts)
        flat = ak.flatten(prt)
        pid = ak.to_numpy(flat.pid)
        mpid = ak.to_numpy(flat.mother_pid)
        sel = (pid == 22) & (np.abs(mpid) > 100)
        ev, mother = event[sel], ak.to_numpy(flat.mother)[sel]
        pt, eta, phi, e = (ak.to_numpy(flat[f])[sel] for f in ("pt", "eta", "phi", "e"))
        key = ev.astype(np.int64) * 1_000_000 + mother
        groups, inv = np.unique(key, return_inverse=True)
        px = np.bincount(inv, pt * np.cos(phi), len(groups))
        py = np.bincount(inv, pt * np.sin(phi), len(groups))
        pz = np.bincount(inv, pt * np.sinh(eta), len(groups))
        gpt = np.hypot(px, py)
        geta = np.arcsinh(pz / np.maximum(gpt, 1e-9))
        gphi = np.arctan2(py, px)
        gev = groups // 1_000_000
        gpdg = np.zeros(len(groups), np.int32)
        gpdg[inv] = mpid[sel]
        ok = self._in_window(gpt, geta)
        # leading accepted group per event: sort by (event, -pt) and keep the first of each event
        idx = np.flatnonzero(ok)
        idx = idx[np.lexsort((-gpt[idx], gev[idx]))]
        first = idx[np.r_[True, gev[idx][1:] != gev[idx][:-1]]] if len(idx) else idx
        n = len(counts)
        out = {k: np.zeros(n) for k in ("pt", "eta", "phi")}
        out["pdgid"] = np.zeros(n, np.int32)
        out["pt"][gev[first]] = gpt[first]
        out["eta"][gev[first]] = geta[first]
        out["phi"][gev[first]] = gphi[first]
        out["pdgid"][gev[first]] = gpdg[first]
        del e
        return out

    def _collect(self, gen: PythiaGenerator, n_wanted: int, signal: bool, progress: Progress):
        """Generate until ``n_wanted`` accepted candidates; return candidates and nearby particles."""
        cands, near = [], []
        have = 0
        for _ in range(MAX_BATCHES):
            if have >= n_wanted:
                break
            prt = gen.next_batch(self.batch_size)
            c = self._signal_candidates(prt) if signal else self._background_candidates(prt)
            ok = self._in_window(c["pt"], c["eta"])
            if not ok.any():
                continue
            keep = np.flatnonzero(ok)[: n_wanted - have]
            sub = prt[keep]
            ceta, cphi = c["eta"][keep], c["phi"][keep]
            dr2 = (sub.eta - ceta) ** 2 + _delta_phi(sub.phi, cphi) ** 2
            near.append(sub[dr2 < self.cone**2])
            cands.append({**{k: v[keep] for k, v in c.items()}, "weight": gen.last_weights[keep]})
            have += len(keep)
            progress(len(keep))
        else:
            raise GenerationError(
                f"photons: only {have} of {n_wanted} {'signal' if signal else 'background'} candidates "
                f"after {MAX_BATCHES} batches; is the E_T window [{self.et_min}, {self.et_max}] GeV reachable?"
            )
        if not cands:
            return {k: np.zeros(0) for k in ("pt", "eta", "phi", "pdgid", "weight")}, None
        merged = {k: np.concatenate([c[k] for c in cands]) for k in cands[0]}
        return merged, ak.concatenate(near, axis=0)

    # -- chunk ------------------------------------------------------------------------------
    def _simulate(self, cands, near, label: int, mu: float, rng: np.random.Generator):
        n = len(cands["pt"])
        cells = self.calorimeter.simulate(near, cands["eta"], cands["phi"], np.full(n, mu), rng)
        layers = {k: v for k, v in cells.items() if k.startswith("cells_")}
        shapes = compute_shower_shapes(layers, cells["cl_eta"])
        out = {
            "ph_pt": np.asarray(cells["cl_et"], np.float32),
            "ph_eta": np.asarray(cells["cl_eta"], np.float32),
            "ph_phi": np.asarray(cells["cl_phi"], np.float32),
            "truth_pt": (cands["pt"] * MEV).astype(np.float32),
            "truth_eta": cands["eta"].astype(np.float32),
            "truth_label": np.full(n, label, np.int32),
            "truth_pdgid": cands["pdgid"].astype(np.int32),
            "mu": np.full(n, mu, np.float32),
            "mc_weight": cands["weight"].astype(np.float32),
            "is_unhealthy": np.asarray(cells["is_unhealthy"], bool),
        }
        out.update({k: np.asarray(v, np.float32) for k, v in layers.items()})
        out.update({k: np.asarray(v, np.float32) for k, v in shapes.items()})
        return out

    def generate(self, n_events: int, n_signal: int, seeds: ChunkSeeds, pileup: PileupSpec, progress: Progress):
        parts = []
        rng = seeds.rng(0)
        for label, settings, stream in ((1, self.signal_settings, 1), (0, self.background_settings, 2)):
            n = n_signal if label == 1 else n_events - n_signal
            if n <= 0:
                continue
            gen = PythiaGenerator(
                settings, seeds.pythia(stream), self.ecm_gev, name=f"photons/{'signal' if label else 'background'}"
            )
            cands, near = self._collect(gen, n, bool(label), progress)
            parts.append(self._simulate(cands, near, label, float(pileup.mu), rng))
        return shuffle_together(rng, parts)
