"""Single-pion sample: pi0 against pi+- shot into the six-layer barrel, as topo-cluster images.

The pi0 / pi+- classification and cluster-calibration studies (Cukierman et al.; the caloml-atlas
notebooks) use single pions from a particle gun: no Pythia. Each event is one pion (pi0 signal,
label 1; pi+ or pi- background, label 0, charge 50/50) of energy E drawn log-uniformly or flat in
[``e_min_gev``, ``e_max_gev``], |eta| < ``eta_max``, phi uniform. A pi0 is decayed to two photons
here (isotropic in its rest frame, so the opening angle follows from the kinematics, ~ 2 m / E);
a charged pion is showered by the calorimeter as a hadron (MIP until an exponentially distributed
first interaction, then a shower with a Beta-fluctuating EM fraction; see
:mod:`calolab.generation.showers`). The calorimeter is the parametrised barrel of the photon
sample extended to six layers (EMB1-3, TileBar0-2; ``conf/sample/pions.yaml``); its windows are
the 0.4 x 0.4 images of caloml-atlas (EMB1 128x4, EMB2 16x16, EMB3 8x16, Tile 4x4, 4x4, 2x4),
centred on the hottest EMB2 cell near the pion's impact point (a charged pion's azimuth bent in
the solenoid).

The images hold the *cluster's* cells only, as caloml-atlas images of topo-clusters do: a
topo-like selection per layer keeps cells with |E| > ``seed_sigma`` x noise (seeds) and, in
``growth_steps`` steps, their neighbours (3x3, same layer) with |E| > ``cell_sigma`` x noise;
other cells are zero (no 0-sigma perimeter and no neighbours across layers: a simplification of
ATLAS's 4-2-0 clustering). The sum of the images is the cluster's EM-scale energy ``cluster_e``;
events with ``cluster_e`` below ``cluster_e_min_gev`` (no cluster) are regenerated. Branches
(MeV, radians): ``cells_<layer>``, ``truth_e``, ``truth_eta``, ``truth_phi``, ``truth_pdgid``,
``truth_label``, ``mu``, ``cluster_e``, ``cluster_eta``, ``cluster_phi`` and the cluster moments
of ATLAS's EM-probability classification (:func:`cluster_moments`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import awkward as ak
import numpy as np
from scipy.ndimage import binary_dilation

from calolab.errors import ConfigError, GenerationError
from calolab.generation.geometry import BARREL_LAYERS, EM_LAYERS, GRIDS
from calolab.generation.samples.base import ChunkSeeds, PileupSpec, Progress, Sample, check_fraction, shuffle_together

MEV = 1000.0
PI0_MASS_GEV = 0.1349768
PI_CHARGED_MASS_GEV = 0.13957039
#: Pion energies the generator is valid for (GeV). Below ~0.2 GeV the GFLASH profile fits are frozen
#: (ln(E/E_c) < 3) and the hadronic EM fraction vanishes; above ~1 TeV the spot cap, the hadronic
#: longitudinal profile (a = 1.7 + 0.2 ln E) and the EM-fraction power law are extrapolated beyond
#: the test-beam ranges they were fitted on.
VALID_E_GEV = (0.2, 1000.0)
SPECTRA = ("log", "flat")
#: batches of the gun without reaching the requested events before giving up
MAX_BATCHES = 1000
#: Cluster moment branches written (see :func:`cluster_moments`).
MOMENTS = (
    "cluster_em_frac",
    "cluster_center_lambda",
    "cluster_second_lambda",
    "cluster_second_r",
    "cluster_eng_frac_core",
    "cluster_log_density",
    "cluster_n_cells",
)


def pi0_decay(e, eta, phi, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Two photons (arrays of 2N, pion i's photons at 2i and 2i+1) of pi0 -> gamma gamma, isotropic at rest.

    Args:
        e, eta, phi: (N,) pi0 energy (GeV) and direction.

    Returns:
        pt, eta, phi, e of the photons (GeV, rad).
    """
    e = np.asarray(e, float)
    p = np.sqrt(np.maximum(e**2 - PI0_MASS_GEV**2, 0.0))
    gamma, beta = e / PI0_MASS_GEV, p / np.maximum(e, 1e-12)
    cos_t, phi_star = rng.uniform(-1.0, 1.0, len(e)), rng.uniform(0.0, 2.0 * math.pi, len(e))
    sin_t = np.sqrt(1.0 - cos_t**2)
    half = PI0_MASS_GEV / 2.0
    n = np.stack([np.cos(phi) / np.cosh(eta), np.sin(phi) / np.cosh(eta), np.tanh(eta)], axis=1)  # (N, 3)
    u = np.stack([-np.sin(phi), np.cos(phi), np.zeros_like(phi)], axis=1)  # perpendicular to n
    v = np.cross(n, u)
    out = {k: np.empty(2 * len(e)) for k in ("pt", "eta", "phi", "e")}
    for k, sign in enumerate((1.0, -1.0)):  # back to back at rest
        p_par = gamma * (sign * half * cos_t + beta * half)  # (N,)
        p_perp = sign * half * sin_t
        mom = p_par[:, None] * n + p_perp[:, None] * (np.cos(phi_star)[:, None] * u + np.sin(phi_star)[:, None] * v)
        pt = np.hypot(mom[:, 0], mom[:, 1])
        out["pt"][k::2] = pt
        out["eta"][k::2] = np.arcsinh(mom[:, 2] / np.maximum(pt, 1e-12))
        out["phi"][k::2] = np.arctan2(mom[:, 1], mom[:, 0])
        out["e"][k::2] = gamma * half * (1.0 + sign * beta * cos_t)
    return out


def topo_mask(
    cells: np.ndarray, sigma: np.ndarray, seed_sigma: float, cell_sigma: float, growth_steps: int
) -> np.ndarray:
    """(N, n_eta, n_phi) bool: seeds |E| > seed_sigma x sigma grown into 3x3 neighbours with |E| > cell_sigma x sigma.

    Args:
        cells: (N, n_eta, n_phi) cell energies of one layer.
        sigma: (N,) the layer's cell noise per event.
    """
    significance = np.abs(cells) / np.maximum(sigma, 1e-9)[:, None, None]
    mask = significance > seed_sigma
    grow = significance > cell_sigma
    structure = np.ones((1, 3, 3), bool)  # neighbours within the layer, never across events
    for _ in range(growth_steps):
        mask = mask | (grow & binary_dilation(mask, structure=structure))
    return mask


def cluster_moments(
    cells: Mapping[str, np.ndarray], eta: np.ndarray, depth_edges_lambda: np.ndarray, radius_cm: float
) -> dict[str, np.ndarray]:
    """The cluster moments of ATLAS's local-hadronic (EM probability) classification, from cluster cells.

    Positive cells weight every moment. ``cluster_em_frac``: energy in EMB1-3 over all;
    ``cluster_center_lambda``: energy-weighted mean of the layers' mid-depths along the path
    (interaction lengths, cosh(eta) x the depth at eta = 0); ``cluster_second_lambda``: the
    variance of that depth (lambda^2); ``cluster_second_r``: energy-weighted mean squared
    transverse distance (cm^2) of cells from their layer's energy barycentre;
    ``cluster_eng_frac_core``: sum over layers of the hottest cell over the total (ATLAS's
    ENG_FRAC_CORE); ``cluster_log_density``: log10 of the energy-weighted mean cell energy
    density (MeV per cell volume, volumes d_eta x d_phi x depth in lambda: only the ordering
    matters); ``cluster_n_cells``: cells in the cluster.

    Args:
        cells: layer -> (N, n_eta, n_phi) cluster cells (zero outside the cluster), all six layers.
        eta: (N,) cluster eta.
        depth_edges_lambda: back edges of presampler and the six layers (DepthStack.edges_lambda).
        radius_cm: the calorimeter radius (cells' transverse size in cm).
    """
    n = len(eta)
    front, back = depth_edges_lambda[:-1], depth_edges_lambda[1:]
    mids, thick = (front + back) / 2.0, back - front
    e_layer, e_max, r2, dens, n_cells = [], [], np.zeros(n), np.zeros(n), np.zeros(n)
    for li, name in enumerate(BARREL_LAYERS):
        c = np.clip(cells[name], 0.0, None).astype(np.float64)  # (N, h, w)
        grid = GRIDS[name]
        el = c.sum(axis=(1, 2))
        safe = np.where(el > 0, el, 1.0)
        i = (np.arange(c.shape[1]) * grid.d_eta)[None, :, None]
        j = (np.arange(c.shape[2]) * grid.d_phi)[None, None, :]
        bi = (c * i).sum(axis=(1, 2)) / safe
        bj = (c * j).sum(axis=(1, 2)) / safe
        d2 = ((i - bi[:, None, None]) ** 2 + (j - bj[:, None, None]) ** 2) * radius_cm**2
        r2 += (c * d2).sum(axis=(1, 2))
        volume = grid.d_eta * grid.d_phi * thick[li]
        dens += (c * c / volume).sum(axis=(1, 2))
        n_cells += (cells[name] != 0).sum(axis=(1, 2))
        e_layer.append(el)
        e_max.append(c.max(axis=(1, 2)))
    e_layer = np.stack(e_layer, axis=1)  # (N, 6)
    total = e_layer.sum(axis=1)
    safe = np.where(total > 0, total, 1.0)
    path = np.cosh(eta)
    centre = (e_layer @ mids) / safe
    second = (e_layer @ mids**2) / safe - centre**2
    em = e_layer[:, : len(EM_LAYERS)].sum(axis=1)
    out = {
        "cluster_em_frac": em / safe,
        "cluster_center_lambda": centre * path,
        "cluster_second_lambda": np.maximum(second, 0.0) * path**2,
        "cluster_second_r": r2 / safe,
        "cluster_eng_frac_core": np.stack(e_max, axis=1).sum(axis=1) / safe,
        "cluster_log_density": np.log10(np.maximum(dens / safe, 1e-6)),
        "cluster_n_cells": n_cells,
    }
    return {k: v.astype(np.float32) for k, v in out.items()}


class PionSample(Sample):
    """Single pi0 (signal, label 1) and pi+- (background, label 0) in the six-layer barrel (see module docstring).

    Args:
        calorimeter: an :class:`~calolab.generation.calorimeter.EMCalorimeter` simulating the six
            barrel layers (three Tile depths).
        e_min_gev, e_max_gev: pion energy range, within :data:`VALID_E_GEV`.
        spectrum: ``log`` (log-uniform: as many pions per decade) or ``flat`` in E.
        eta_max: |eta| acceptance (the study: 0.7, the central Tile barrel).
        signal_fraction: fraction of pi0 events.
        seed_sigma, cell_sigma: topo-like cluster thresholds in units of the cell noise.
        growth_steps: neighbour steps grown from the seeds.
        cluster_e_min_gev: minimum EM-scale cluster energy; below it the pion is shot again.
        batch_size: pions simulated per vectorised batch.
    """

    tree = "pions"

    def __init__(
        self,
        *,
        calorimeter,
        e_min_gev: float = 0.5,
        e_max_gev: float = 100.0,
        spectrum: str = "log",
        eta_max: float = 0.7,
        signal_fraction: float = 0.5,
        seed_sigma: float = 4.0,
        cell_sigma: float = 2.0,
        growth_steps: int = 2,
        cluster_e_min_gev: float = 0.2,
        batch_size: int = 2000,
    ):
        lo, hi = VALID_E_GEV
        try:
            e_min, e_max = float(e_min_gev), float(e_max_gev)
        except (TypeError, ValueError):
            raise ConfigError(
                f"e_min_gev and e_max_gev must be numbers, but got [{e_min_gev!r}, {e_max_gev!r}]"
            ) from None
        if not (lo <= e_min < e_max <= hi):
            raise ConfigError(
                f"pion energies must satisfy {lo} <= e_min_gev < e_max_gev <= {hi} GeV (the range the shower "
                f"parametrisations are valid for), but got e_min_gev={e_min_gev}, e_max_gev={e_max_gev}"
            )
        if spectrum not in SPECTRA:
            raise ConfigError(f"spectrum must be one of {list(SPECTRA)}, but got spectrum={spectrum!r}")
        if not 0 < float(eta_max) <= 1.4:
            raise ConfigError(f"eta_max must be in (0, 1.4] (barrel), but got eta_max={eta_max}")
        layers = tuple(getattr(calorimeter, "layers", ()))
        if layers != BARREL_LAYERS:
            raise ConfigError(
                f"the pion sample needs a calorimeter with the six barrel layers {list(BARREL_LAYERS)} "
                f"(tile_depth_lambda: a list of three depths), but it simulates {list(layers)}"
            )
        if not 0 < float(cell_sigma) <= float(seed_sigma):
            raise ConfigError(
                f"thresholds must satisfy 0 < cell_sigma <= seed_sigma, but got cell_sigma={cell_sigma}, "
                f"seed_sigma={seed_sigma}"
            )
        if isinstance(growth_steps, bool) or not isinstance(growth_steps, int) or growth_steps < 0:
            raise ConfigError(f"growth_steps must be an integer >= 0, but got growth_steps={growth_steps!r}")
        if not 0 <= float(cluster_e_min_gev) < e_max:
            raise ConfigError(
                f"cluster_e_min_gev must be in [0, e_max_gev), but got cluster_e_min_gev={cluster_e_min_gev}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ConfigError(f"batch_size must be an integer > 0, but got batch_size={batch_size!r}")
        self.calorimeter = calorimeter
        self.e_min, self.e_max, self.spectrum = e_min, e_max, spectrum
        self.eta_max = float(eta_max)
        self.signal_fraction = check_fraction("signal_fraction", signal_fraction)
        self.seed_sigma, self.cell_sigma, self.growth_steps = float(seed_sigma), float(cell_sigma), growth_steps
        self.cluster_e_min = float(cluster_e_min_gev) * MEV
        self.batch_size = batch_size

    # -- the gun ------------------------------------------------------------------------------
    def _energies(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.spectrum == "log":
            return np.exp(rng.uniform(math.log(self.e_min), math.log(self.e_max), n))
        return rng.uniform(self.e_min, self.e_max, n)

    def _shoot(
        self, label: int, n: int, rng: np.random.Generator
    ) -> tuple[dict[str, np.ndarray], ak.Array, np.ndarray]:
        """Truth values, the particles reaching the calorimeter, and the seed azimuth of ``n`` pions."""
        e = self._energies(n, rng)
        eta = rng.uniform(-self.eta_max, self.eta_max, n)
        phi = rng.uniform(-math.pi, math.pi, n)
        if label == 1:
            g = pi0_decay(e, eta, phi, rng)
            fields = {**g, "m": np.zeros(2 * n), "pid": np.full(2 * n, 22), "charge": np.zeros(2 * n)}
            counts, seed_phi, pdgid = np.full(n, 2), phi, np.full(n, 111)
        else:
            charge = rng.choice([-1.0, 1.0], n)
            pt = np.sqrt(np.maximum(e**2 - PI_CHARGED_MASS_GEV**2, 0.0)) / np.cosh(eta)
            fields = {
                "pt": pt,
                "eta": eta,
                "phi": phi,
                "e": e,
                "m": np.full(n, PI_CHARGED_MASS_GEV),
                "pid": (211 * charge).astype(np.int64),
                "charge": charge,
            }
            counts, pdgid = np.ones(n, np.int64), (211 * charge).astype(np.int32)
            seed_phi = self.calorimeter.impact_phi(pt, phi, charge)
        particles = ak.unflatten(ak.zip({k: np.asarray(v) for k, v in fields.items()}), counts)
        truth = {"truth_e": e * MEV, "truth_eta": eta, "truth_phi": phi, "truth_pdgid": pdgid}
        return truth, particles, seed_phi

    def _simulate(self, label: int, n: int, mu: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
        truth, particles, seed_phi = self._shoot(label, n, rng)
        cal = self.calorimeter
        mus = np.full(n, mu)
        out = cal.simulate(particles, truth["truth_eta"], seed_phi, mus, rng)
        cells = {}
        for name in BARREL_LAYERS:
            sigma = np.sqrt(cal.noise_mev[name] ** 2 + cal.pileup_noise_mev[name] ** 2 * mus)
            c = out[f"cells_{name}"]
            cells[name] = np.where(topo_mask(c, sigma, self.seed_sigma, self.cell_sigma, self.growth_steps), c, 0.0)
        cluster_e = sum(c.sum(axis=(1, 2), dtype=np.float64) for c in cells.values())
        result = {
            **{k: np.asarray(v, np.float32) for k, v in truth.items() if k != "truth_pdgid"},
            "truth_pdgid": truth["truth_pdgid"].astype(np.int32),
            "truth_label": np.full(n, label, np.int32),
            "mu": mus.astype(np.float32),
            "cluster_e": cluster_e.astype(np.float32),
            "cluster_eta": out["cl_eta"],
            "cluster_phi": out["cl_phi"],
            **cluster_moments(cells, out["cl_eta"], cal.stack.edges_lambda, cal.radius_cm),
        }
        result.update({f"cells_{k}": v.astype(np.float32) for k, v in cells.items()})
        return result

    def _collect(self, label: int, n_wanted: int, mu: float, rng: np.random.Generator, progress: Progress):
        parts, have = [], 0
        for _ in range(MAX_BATCHES):
            if have >= n_wanted:
                break
            cand = self._simulate(label, self.batch_size, mu, rng)
            keep = np.flatnonzero(cand["cluster_e"] >= self.cluster_e_min)[: n_wanted - have]
            if len(keep):
                parts.append({k: v[keep] for k, v in cand.items()})
                have += len(keep)
                progress(len(keep))
        else:
            raise GenerationError(
                f"pions: only {have} of {n_wanted} {'pi0' if label else 'pi+-'} clusters above cluster_e_min_gev="
                f"{self.cluster_e_min / MEV} after {MAX_BATCHES} batches of {self.batch_size}"
            )
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def generate(self, n_events: int, n_signal: int, seeds: ChunkSeeds, pileup: PileupSpec, progress: Progress):
        rng = seeds.rng(0)
        parts = [
            self._collect(label, n, float(pileup.mu), rng, progress)
            for label, n in ((1, n_signal), (0, n_events - n_signal))
            if n > 0
        ]
        return shuffle_together(rng, parts)
