"""Jet building: clustering, trimming, N-subjettiness and the leading-jet selection.

``JetBuilder`` turns a batch of events of reconstructed constituents into one jet per event,
the way the jet-image papers do (arXiv:1511.05190): cluster with anti-kt (or kt / C-A) of radius
R, take the highest-pT jet, trim it (recluster its constituents into kt subjets of radius
``trim_radius`` and drop subjets with pT < ``trim_fcut`` x the untrimmed jet pT), and apply the
pT / eta (or rapidity) / mass window to the trimmed jet. tau21 = tau2/tau1 is the normalised
N-subjettiness of the trimmed jet (beta = 1, R0 = R, axes from exclusive kt clustering of its
constituents, distances in rapidity-azimuth), computed by FastJet contrib's Nsubjettiness.
A jet with fewer than two constituents (or tau1 = 0) has tau21 = 0, since one axis already
describes it completely.

Every step runs on the whole batch at once: each clustering is one FastJet multi-event
``ClusterSequence`` on an awkward array, and the bookkeeping around it (leading jet, trimming,
four-momentum sums) is done with flat numpy index arrays, with no Python loop over events.
"""

from __future__ import annotations

import awkward as ak
import fastjet
import numpy as np

from calolab.errors import ConfigError, check_number
from calolab.generation.detector import flat_field

ALGORITHMS = {
    "antikt": fastjet.antikt_algorithm,
    "kt": fastjet.kt_algorithm,
    "cambridge": fastjet.cambridge_algorithm,
}


def _jagged_momenta(px: np.ndarray, py: np.ndarray, pz: np.ndarray, e: np.ndarray, counts: np.ndarray) -> ak.Array:
    """Build the ``[event][particle]{px, py, pz, E}`` array FastJet's multi-event mode reads."""
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    content = ak.contents.RecordArray(
        [ak.contents.NumpyArray(np.ascontiguousarray(x, dtype=np.float64)) for x in (px, py, pz, e)],
        ["px", "py", "pz", "E"],
    )
    return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), content))


def _cluster(
    px: np.ndarray,
    py: np.ndarray,
    pz: np.ndarray,
    e: np.ndarray,
    counts: np.ndarray,
    jet_def: fastjet.JetDefinition,
    fraction_of_leading: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cluster every event and return its hardest inclusive jets as flat index arrays.

    FastJet's constituent lookup costs time for every jet it returns, so only jets above
    ``fraction_of_leading`` x (the lowest leading-jet pT of the batch) are asked for: this keeps
    every event's leading jet, and every jet above ``fraction_of_leading`` x its own event's
    leading pT, which is all the callers look at.

    Args:
        px, py, pz, e: flat particle four-momenta, grouped by event.
        counts: (N,) particles per event.
        jet_def: the jet definition.
        fraction_of_leading: the fraction of the leading pT (at most 1) above which jets are kept.

    Returns:
        ``(jet_event, const_jet, const_index, jet_pt)``: the event of each jet, the jet of each
        constituent, the constituent's position in the flat input, and each jet's pT.
    """
    cluster_seq = fastjet.ClusterSequence(_jagged_momenta(px, py, pz, e, counts), jet_def)
    all_jets = cluster_seq.inclusive_jets(0.0)
    all_pt = np.hypot(np.asarray(ak.flatten(all_jets.px)), np.asarray(ak.flatten(all_jets.py)))
    all_event = np.repeat(np.arange(len(counts)), np.asarray(ak.num(all_jets, axis=1)))
    leading_pt = np.zeros(len(counts))
    np.maximum.at(leading_pt, all_event, all_pt)
    has_jet = np.bincount(all_event, minlength=len(counts)) > 0
    min_pt = fraction_of_leading * leading_pt[has_jet].min() * (1.0 - 1e-9) if has_jet.any() else 0.0

    index = cluster_seq.constituent_index(min_pt)  # (N, jets, constituents) event-local
    jets_per_event = np.asarray(ak.num(index, axis=1), dtype=np.int64)
    const_per_jet = np.asarray(ak.flatten(ak.num(index, axis=2)), dtype=np.int64)
    local = np.asarray(ak.flatten(index, axis=None), dtype=np.int64)
    jet_event = np.repeat(np.arange(len(counts)), jets_per_event)
    const_jet = np.repeat(np.arange(len(const_per_jet)), const_per_jet)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    const_index = starts[jet_event[const_jet]] + local
    n_jets = len(jet_event)
    jet_px = np.bincount(const_jet, weights=px[const_index], minlength=n_jets)
    jet_py = np.bincount(const_jet, weights=py[const_index], minlength=n_jets)
    return jet_event, const_jet, const_index, np.hypot(jet_px, jet_py)


class JetBuilder:
    """Leading (trimmed) jet per event with its kinematics, tau21 and constituents.

    Args:
        radius: jet radius R of the clustering; also R0 of N-subjettiness.
        algorithm: ``"antikt"``, ``"kt"`` or ``"cambridge"``.
        trim_radius: kt subjet radius of trimming, or None to skip trimming.
        trim_fcut: subjets with pT below this fraction of the untrimmed jet pT are dropped.
        pt_min: lower edge of the trimmed-jet pT window in GeV (inclusive).
        pt_max: upper edge of the pT window in GeV (exclusive).
        eta_max: the jet must have |eta| < eta_max, or |y| < eta_max with ``use_rapidity``.
        use_rapidity: cut on the jet rapidity instead of its pseudorapidity.
        mass_min: lower edge of the trimmed-jet mass window in GeV (inclusive).
        mass_max: upper edge of the mass window in GeV (exclusive), or None for no upper edge.
    """

    def __init__(
        self,
        *,
        radius: float,
        algorithm: str = "antikt",
        trim_radius: float | None = 0.3,
        trim_fcut: float = 0.05,
        pt_min: float,
        pt_max: float,
        eta_max: float,
        use_rapidity: bool = False,
        mass_min: float = 0.0,
        mass_max: float | None = None,
    ) -> None:
        check_number("radius", radius, 0.0, 3.0, low_open=True)
        if algorithm not in ALGORITHMS:
            raise ConfigError(f"algorithm must be one of {sorted(ALGORITHMS)}, but got algorithm={algorithm!r}")
        if trim_radius is not None:
            check_number("trim_radius", trim_radius, 0.0, radius, low_open=True)
        check_number("trim_fcut", trim_fcut, 0.0, 1.0)
        check_number("pt_min", pt_min, 0.0)
        if not pt_max > pt_min:
            raise ConfigError(f"pt_max must be > pt_min={pt_min}, but got pt_max={pt_max}")
        check_number("eta_max", eta_max, 0.0, low_open=True)
        check_number("mass_min", mass_min, 0.0)
        if mass_max is not None and not mass_max > mass_min:
            raise ConfigError(f"mass_max must be None or > mass_min={mass_min}, but got mass_max={mass_max}")
        self.radius = float(radius)
        self.algorithm = algorithm
        self.trim_radius = None if trim_radius is None else float(trim_radius)
        self.trim_fcut = float(trim_fcut)
        self.pt_min = float(pt_min)
        self.pt_max = float(pt_max)
        self.eta_max = float(eta_max)
        self.use_rapidity = bool(use_rapidity)
        self.mass_min = float(mass_min)
        self.mass_max = None if mass_max is None else float(mass_max)
        self._jet_def = fastjet.JetDefinition(ALGORITHMS[algorithm], self.radius)
        if self.trim_radius is not None:
            self._trim_def = fastjet.JetDefinition(fastjet.kt_algorithm, self.trim_radius)

    def build(self, constituents: ak.Array) -> tuple[np.ndarray, ak.Array]:
        """Find, trim and describe the leading jet of every event.

        Args:
            constituents: N events of records ``pt, eta, phi, e`` and optionally ``charge``
                (default 0) and ``is_pileup`` (default False).

        Returns:
            ``(mask, jets)``: ``mask`` (N,) is True where the event has a leading jet inside the
            pT, eta/rapidity and mass windows; ``jets`` has one record per event with
            ``jet_pt, jet_eta, jet_y, jet_phi, jet_m, jet_tau21`` (NaN without a jet; ``jet_y``
            is the rapidity that ``use_rapidity`` cuts on), ``jet_nconst``
            (0 without a jet) and the constituent lists ``const_pt, const_eta, const_phi,
            const_charge, const_is_pileup`` of the (trimmed) jet, sorted by decreasing pT.
        """
        n_events = len(constituents)
        counts = np.asarray(ak.num(constituents, axis=1), dtype=np.int64)
        pt = flat_field(constituents, "pt", np.float64)
        eta = flat_field(constituents, "eta", np.float64)
        phi = flat_field(constituents, "phi", np.float64)
        energy = flat_field(constituents, "e", np.float64)
        px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)

        # Leading jet: for each event, the jet that comes first when sorted by (event, -pT).
        jet_event, const_jet, const_index, jet_pt = _cluster(px, py, pz, energy, counts, self._jet_def, 1.0)
        jets_per_event = np.bincount(jet_event, minlength=n_events)
        order = np.lexsort((-jet_pt, jet_event))
        first = np.cumsum(jets_per_event) - jets_per_event
        leading = np.zeros(len(jet_event), dtype=bool)
        leading[order[first[jets_per_event > 0]]] = True
        in_leading = leading[const_jet]
        lead_index = const_index[in_leading]  # flat constituent positions, grouped by event
        lead_event = jet_event[const_jet[in_leading]]
        lead_pt = np.zeros(n_events)
        lead_pt[jet_event[leading]] = jet_pt[leading]

        if self.trim_radius is not None:
            lead_index, lead_event = self._trim(px, py, pz, energy, lead_index, lead_event, lead_pt, n_events)

        jets = self._describe(px, py, pz, energy, lead_index, lead_event, n_events)
        jets_const = {
            "const_pt": pt,
            "const_eta": eta,
            "const_phi": phi,
            "const_charge": flat_field(constituents, "charge", np.float32, default=0.0),
            "const_is_pileup": flat_field(constituents, "is_pileup", np.bool_, default=False),
        }
        by_pt = np.lexsort((-pt[lead_index], lead_event))
        sorted_index = lead_index[by_pt]
        n_const = np.bincount(lead_event, minlength=n_events)
        for name, values in jets_const.items():
            jets[name] = ak.unflatten(values[sorted_index], n_const)
        mask = self._window(jets)
        return mask, ak.zip(jets, depth_limit=1)

    def _trim(
        self,
        px: np.ndarray,
        py: np.ndarray,
        pz: np.ndarray,
        energy: np.ndarray,
        lead_index: np.ndarray,
        lead_event: np.ndarray,
        lead_pt: np.ndarray,
        n_events: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Keep the leading-jet constituents in kt subjets with pT >= fcut x jet pT."""
        counts = np.bincount(lead_event, minlength=n_events)
        sub_event, sub_const_jet, sub_const_index, sub_pt = _cluster(
            px[lead_index], py[lead_index], pz[lead_index], energy[lead_index], counts, self._trim_def, self.trim_fcut
        )
        kept_subjet = sub_pt >= self.trim_fcut * lead_pt[sub_event]
        keep = np.zeros(len(lead_index), dtype=bool)
        keep[sub_const_index] = kept_subjet[sub_const_jet]
        return lead_index[keep], lead_event[keep]

    def _describe(
        self,
        px: np.ndarray,
        py: np.ndarray,
        pz: np.ndarray,
        energy: np.ndarray,
        index: np.ndarray,
        event: np.ndarray,
        n_events: int,
    ) -> dict[str, np.ndarray]:
        """Four-momentum sums, kinematics and tau21 of the jets made of the given constituents."""
        n_const = np.bincount(event, minlength=n_events)
        sums = [np.bincount(event, weights=x[index], minlength=n_events) for x in (px, py, pz, energy)]
        j_px, j_py, j_pz, j_e = sums
        has_jet = n_const > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            j_pt = np.hypot(j_px, j_py)
            j_eta = np.arcsinh(j_pz / j_pt)
            j_y = 0.5 * np.log((j_e + j_pz) / (j_e - j_pz))
            j_m = np.sqrt(np.maximum(j_e**2 - j_px**2 - j_py**2 - j_pz**2, 0.0))
        j_phi = np.arctan2(j_py, j_px)

        counts = n_const.astype(np.int64)
        cluster_seq = fastjet.ClusterSequence(
            _jagged_momenta(px[index], py[index], pz[index], energy[index], counts),
            fastjet.JetDefinition(fastjet.kt_algorithm, self.radius),
        )
        taus = ak.to_numpy(
            cluster_seq.njettiness(
                measure_definition="NormalizedMeasure",
                axes_definition="KT_Axes",
                njets=[1, 2],
                beta=1.0,
                R0=self.radius,
            )
        ).reshape(n_events, 2)  # (N, [tau1, tau2])
        tau1, tau2 = taus[:, 0], taus[:, 1]
        tau21 = np.divide(tau2, tau1, out=np.zeros(n_events), where=(tau1 > 0) & (n_const >= 2))

        nan = np.full(n_events, np.nan)
        return {
            "jet_pt": np.where(has_jet, j_pt, nan),
            "jet_eta": np.where(has_jet, j_eta, nan),
            "jet_y": np.where(has_jet, j_y, nan),
            "jet_phi": np.where(has_jet, j_phi, nan),
            "jet_m": np.where(has_jet, j_m, nan),
            "jet_tau21": np.where(has_jet, tau21, nan),
            "jet_nconst": counts,
        }

    def _window(self, jets: dict[str, np.ndarray]) -> np.ndarray:
        """True where the jet lies inside the pT, eta (or rapidity) and mass windows."""
        direction = jets["jet_y"] if self.use_rapidity else jets["jet_eta"]
        with np.errstate(invalid="ignore"):
            mask = (
                (jets["jet_pt"] >= self.pt_min)
                & (jets["jet_pt"] < self.pt_max)
                & (np.abs(direction) < self.eta_max)
                & (jets["jet_m"] >= self.mass_min)
            )
            if self.mass_max is not None:
                mask &= jets["jet_m"] < self.mass_max
        return mask
