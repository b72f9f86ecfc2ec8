"""Jet samples: W jets against QCD (``wjets``) and quark against gluon jets (``qgjets``).

Both run two Pythia processes, overlay pileup from a minimum-bias pool, pass the particles
through the tower-and-track detector (:class:`calolab.generation.detector.Detector`) and keep
the leading jet from :class:`calolab.generation.jets.JetBuilder` when it falls in the
configured pT / eta / mass windows. For W jets the signal jet must also match the hadronically
decaying W (``match_pid: 24``) within ``match_radius``, so that a signal jet is a W jet and not
an ISR jet of a W' event.
"""

from __future__ import annotations

from collections.abc import Sequence

import awkward as ak
import numpy as np

from calolab.errors import ConfigError, GenerationError
from calolab.generation.geometry import wrap_phi
from calolab.generation.pythia import PythiaGenerator, _quiet_stdout
from calolab.generation.samples.base import ChunkSeeds, PileupSpec, Progress, Sample, check_fraction, shuffle_together

MEV = 1000.0
MAX_BATCHES = 10_000
PARTICLE_FIELDS = ("pt", "eta", "phi", "e", "m", "pid", "charge")


class JetSample(Sample):
    """Leading-jet sample with signal (label 1) and background (label 0) processes.

    Args:
        signal_settings: Pythia settings of the signal process.
        background_settings: Pythia settings of the background process.
        detector: towers and tracks (:class:`~calolab.generation.detector.Detector`).
        jets: clustering, trimming and windows (:class:`~calolab.generation.jets.JetBuilder`).
        signal_fraction: fraction of signal events.
        match_pid: if set, a signal jet must lie within ``match_radius`` of the last copy of
            this particle (24: the W); None keeps every signal jet (q/g labels by process).
        match_radius: Delta R for that match.
        batch_size: Pythia events per vectorised batch.
        ecm_gev: centre-of-mass energy.
    """

    tree = "jets"
    needs_pileup_pool = True

    def __init__(
        self,
        *,
        signal_settings: Sequence[str],
        background_settings: Sequence[str],
        detector,
        jets,
        signal_fraction: float = 0.5,
        match_pid: int | None = None,
        match_radius: float = 0.75,
        batch_size: int = 200,
        ecm_gev: float = 13000.0,
    ):
        if batch_size <= 0:
            raise ConfigError(f"batch_size must be > 0, but got batch_size={batch_size}")
        if match_radius <= 0:
            raise ConfigError(f"match_radius must be > 0, but got match_radius={match_radius}")
        self.signal_settings = list(signal_settings)
        self.background_settings = list(background_settings)
        self.detector, self.jets = detector, jets
        self.signal_fraction = check_fraction("signal_fraction", signal_fraction)
        self.match_pid = None if match_pid is None else int(match_pid)
        self.match_radius = float(match_radius)
        self.batch_size = int(batch_size)
        self.ecm_gev = float(ecm_gev)

    def _collect(self, gen, n_wanted, signal, pileup: PileupSpec, rng, progress) -> dict:
        pieces, have = [], 0
        match = self.match_pid if signal else None
        for _ in range(MAX_BATCHES):
            if have >= n_wanted:
                break
            if match is None:
                prt, truth = gen.next_batch(self.batch_size), None
            else:
                prt, truth = gen.next_batch(self.batch_size, truth_pid=match)
            prt = ak.zip({f: prt[f] for f in PARTICLE_FIELDS} | {"is_pileup": ak.zeros_like(prt.pt, dtype=bool)})
            if pileup.pool is not None and pileup.mu > 0:
                prt = pileup.pool.overlay(prt, float(pileup.mu), rng)
            constituents = self.detector.reconstruct(prt, rng)
            with _quiet_stdout():  # FastJet prints its banner on first use
                ok, jets = self.jets.build(constituents)
            ok = np.asarray(ok, bool)
            jets = {f: jets[f] for f in jets.fields} if isinstance(jets, ak.Array) else dict(jets)
            if truth is not None:
                dphi = wrap_phi(np.asarray(jets["jet_phi"]) - ak.to_numpy(truth.phi))
                deta = np.asarray(jets["jet_eta"]) - ak.to_numpy(truth.eta)
                ok &= ak.to_numpy(truth.found) & (deta**2 + dphi**2 < self.match_radius**2)
            keep = np.flatnonzero(ok)[: n_wanted - have]
            if len(keep) == 0:
                continue
            pieces.append(
                {k: v[keep] if isinstance(v, ak.Array) and v.ndim > 1 else np.asarray(v)[keep] for k, v in jets.items()}
            )
            have += len(keep)
            progress(len(keep))
        else:
            raise GenerationError(
                f"{self.tree}: only {have} of {n_wanted} {'signal' if signal else 'background'} jets after "
                f"{MAX_BATCHES} batches; check the jet pT / eta / mass windows against the process"
            )
        out = {}
        for k in pieces[0]:
            vals = [p[k] for p in pieces]
            out[k] = ak.concatenate(vals, axis=0) if isinstance(vals[0], ak.Array) else np.concatenate(vals)
        return out

    def _branches(self, jets: dict, label: int, mu: float) -> dict:
        n = len(jets["jet_pt"])
        const = ak.zip(
            {
                "pt": ak.values_astype(jets["const_pt"] * MEV, np.float32),
                "eta": ak.values_astype(jets["const_eta"], np.float32),
                "phi": ak.values_astype(jets["const_phi"], np.float32),
                "charge": ak.values_astype(jets["const_charge"], np.float32),
                "is_pileup": ak.values_astype(jets["const_is_pileup"], bool),
            }
        )
        return {
            "jet_pt": (np.asarray(jets["jet_pt"]) * MEV).astype(np.float32),
            "jet_eta": np.asarray(jets["jet_eta"], np.float32),
            "jet_phi": np.asarray(jets["jet_phi"], np.float32),
            "jet_m": (np.asarray(jets["jet_m"]) * MEV).astype(np.float32),
            "jet_tau21": np.asarray(jets["jet_tau21"], np.float32),
            "jet_nconst": np.asarray(jets["jet_nconst"], np.int32),
            "truth_label": np.full(n, label, np.int32),
            "mu": np.full(n, mu, np.float32),
            "const": ak.to_packed(const),
        }

    def generate(self, n_events: int, n_signal: int, seeds: ChunkSeeds, pileup: PileupSpec, progress: Progress):
        parts = []
        rng = seeds.rng(0)
        for label, settings, stream in ((1, self.signal_settings, 1), (0, self.background_settings, 2)):
            n = n_signal if label == 1 else n_events - n_signal
            if n <= 0:
                continue
            name = f"{self.tree}/{'signal' if label else 'background'}"
            gen = PythiaGenerator(settings, seeds.pythia(stream), self.ecm_gev, name=name)
            jets = self._collect(gen, n, bool(label), pileup, rng, progress)
            parts.append(self._branches(jets, label, float(pileup.mu)))
        return shuffle_together(rng, parts)
