"""Parametrised showers: GFLASH electromagnetic energy spots, hadronic showers, sampling fluctuations.

Everything is vectorised over all particles of a batch at once: a particle's shower becomes a
set of energy *spots* (point deposits) flattened into one array, each spot with its owner, its
depth along the flight path and its transverse displacement from the shower axis. The caller
(:class:`calolab.generation.calorimeter.EMCalorimeter`) assigns depths to layers and positions to
cells.

* EM (e+-, photons; GFLASH, hep-ex/0001020, numbers in REFERENCE.md). Per shower, (ln T,
  ln alpha) are drawn from the correlated normal of the GFLASH fluctuations around
  T = ln y - 0.812 and alpha = 0.81 + (0.458 + 2.26/Z) ln y, y = E / E_c; spot depths follow
  Gamma(alpha, beta = (alpha - 1) / T) in X0, spot radii the core + tail mixture
  f(r) = p 2 r Rc^2 / (r^2 + Rc^2)^2 + (1 - p) 2 r Rt^2 / (r^2 + Rt^2)^2 in Moliere radii with
  the tau = t / T dependent Rc, Rt, p, and the azimuth is uniform. The profile parameters are
  frozen below ln y = 3 (E ~ 20 E_c ~ 220 MeV), where the GFLASH fits (and their fluctuation
  widths, which diverge at ln y ~ 1.1) stop being meaningful. Photons first travel an
  exponential depth of mean 9/7 X0 before converting: their profile starts there.
* Spot count. GFLASH's N = 93 ln(Z) E^0.876 (~11 000 spots at 50 GeV) is capped at
  ``max_spots`` x sqrt(E / 10 GeV) (see :func:`spot_counts`). GFLASH uses its many spots to
  mimic sampling fluctuations; here those come from :func:`sampling_fluctuations` on the cells
  instead, so the spots only have to trace the shower's mean shape, and three variance
  reductions let a few hundred do it: (1) each shower's (depth, radius, azimuth) quantiles form
  a randomly shifted Kronecker lattice (:func:`lattice_uniforms`), so every spot is distributed
  as the profile but a shower's spots cover it evenly; (2) depths are drawn at quantile v^2
  (``EARLY``), putting more, lighter spots in the finely segmented strips; (3) ``CORE_SHARE``
  of the spots come from the core component and radii from a ``WIDEN`` x wider profile. Each
  spot is weighted by the ratio of true to sampled density, weights normalised per shower so
  its energy is exact. Without (2) and (3) the sparse outskirts get a few heavy spots that
  stand out of the noise as fake strip maxima (photon Eratio ~ 0.88 instead of ~ 0.95). Depth
  quantiles use the Wilson-Hilferty Gamma approximation with a tabulated normal quantile (a
  few % off in the far tails for alpha ~ 1, far better near the peak).
* Hadronic. A fraction f_em of a hadronic shower is electromagnetic (pi0s,
  :func:`hadron_em_fraction`) and is showered by the caller like a photon starting at the
  interaction point. The rest deposits its visible energy in ``n_spots`` spots at depths
  Gamma(a, 1 lambda) beyond the start, with a = 1.7 + 0.2 ln E so that the maximum sits at the
  classic 0.2 ln E[GeV] + 0.7 lambda, and radii from 2 r R^2 / (r^2 + R^2)^2 with
  R = ``radius_cm`` (a few cm core, tails to tens of cm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Profile parameters are evaluated at ln(E/E_c) >= this value (see module docstring).
LN_Y_MIN = 3.0
#: Mean photon conversion depth, 9/7 X0.
PHOTON_CONVERSION_X0 = 9.0 / 7.0
#: Largest tau = t / T at which the radial parameters are evaluated.
TAU_MAX = 10.0
#: Radii are drawn from the inverted cumulative with u <= this (r <= 100 R) to stay finite.
_U_MAX = 0.9999
#: Mean EM fraction of hadronic showers 1 - (E / E0)^(k - 1), and its Beta concentration.
HADRON_EM_E0_GEV = 1.0
HADRON_EM_K = 0.82
HADRON_EM_CONCENTRATION = 10.0
#: ``max_spots`` is the spot cap of a shower of this energy; the cap scales as sqrt(E).
SPOT_CAP_REFERENCE_GEV = 10.0
#: Share of an EM shower's spots drawn from the core component (the rest from the tail).
CORE_SHARE = 0.7
#: EM spot radii are drawn from a profile this many times wider, then reweighted.
WIDEN = 2.0
#: Depth quantiles are drawn as v^EARLY, v uniform, putting more (lighter) spots in the strips.
EARLY = 2.0
#: Kronecker steps 1/phi^(1..3) of the R3 sequence, phi^4 = phi + 1 (Roberts' generalised golden ratio).
_PHI3 = 1.2207440846057596
_STEPS = np.array([_PHI3**-1, _PHI3**-2, _PHI3**-3])
# Acklam's rational approximation of the normal quantile (relative error < 1.2e-9).
_A = (
    -3.969683028665376e01,
    2.209460984245205e02,
    -2.759285104469687e02,
    1.383577518672690e02,
    -3.066479806614716e01,
    2.506628277459239e00,
)
_B = (
    -5.447609879822406e01,
    1.615858368580409e02,
    -1.556989798598866e02,
    6.680131188771972e01,
    -1.328068155288572e01,
    1.0,
)
_C = (
    -7.784894002430293e-03,
    -3.223964580411365e-01,
    -2.400758277161838e00,
    -2.549732539343734e00,
    4.374664141464968e00,
    2.938163982698783e00,
)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00, 1.0)
_P_LOW = 0.02425
#: Bins of the normal-quantile tables used for depths (quantiles resolved to 1/4096).
_TABLE_SIZE = 4096


@dataclass(frozen=True)
class Spots:
    """Flattened energy spots of many showers.

    Attributes:
        owner: (S,) index of the particle (in the arrays given to the sampler) owning the spot.
        depth: (S,) depth along the flight path from the front of the material; X0 for EM
            spots, interaction lengths for hadronic ones.
        dx_cm: (S,) transverse displacement from the shower axis along the eta direction.
        dy_cm: (S,) transverse displacement along the phi direction.
        energy_mev: (S,) spot energy.
    """

    owner: np.ndarray
    depth: np.ndarray
    dx_cm: np.ndarray
    dy_cm: np.ndarray
    energy_mev: np.ndarray


@dataclass(frozen=True)
class GflashLongitudinal:
    """GFLASH longitudinal parameters of a set of showers (all arrays (P,)).

    Attributes:
        ln_t, ln_alpha: means of ln T and ln alpha.
        sigma_ln_t, sigma_ln_alpha: their shower-to-shower standard deviations.
        rho: their correlation.
    """

    ln_t: np.ndarray
    ln_alpha: np.ndarray
    sigma_ln_t: np.ndarray
    sigma_ln_alpha: np.ndarray
    rho: np.ndarray

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw (T, alpha) per shower from the correlated log-normal; alpha is kept >= 1.1."""
        z1, z2 = rng.standard_normal((2, len(self.ln_t)))
        ln_t = self.ln_t + self.sigma_ln_t * z1
        ln_alpha = self.ln_alpha + self.sigma_ln_alpha * (self.rho * z1 + np.sqrt(1.0 - self.rho**2) * z2)
        return np.exp(ln_t), np.maximum(np.exp(ln_alpha), 1.1)

    def mean_depth(self) -> np.ndarray:
        """Mean depth alpha T / (alpha - 1) in X0 of the unfluctuated profile."""
        t, alpha = np.exp(self.ln_t), np.exp(self.ln_alpha)
        return alpha * t / (alpha - 1.0)


def gflash_longitudinal(energy_gev: np.ndarray, z_eff: float, critical_energy_mev: float) -> GflashLongitudinal:
    """GFLASH (homogeneous-medium) longitudinal parameters for showers of ``energy_gev``."""
    y = np.maximum(np.asarray(energy_gev, float) * 1000.0 / critical_energy_mev, 1.0)
    ln_y = np.maximum(np.log(y), LN_Y_MIN)
    return GflashLongitudinal(
        ln_t=np.log(ln_y - 0.812),
        ln_alpha=np.log(0.81 + (0.458 + 2.26 / z_eff) * ln_y),
        sigma_ln_t=1.0 / (-1.4 + 1.26 * ln_y),
        sigma_ln_alpha=1.0 / (-0.58 + 0.86 * ln_y),
        rho=0.705 - 0.023 * ln_y,
    )


def gflash_radial(tau: np.ndarray, ln_e: np.ndarray, z_eff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GFLASH radial parameters (Rc, Rt in Moliere radii, core probability p) at tau = t / T.

    tau is capped at :data:`TAU_MAX`, where Rt already exceeds ~50 Moliere radii (it grows
    exponentially beyond and would overflow for the rare spots far behind a short shower).
    """
    tau = np.minimum(tau, TAU_MAX)
    rc = 0.0251 + 0.00319 * ln_e + (0.1162 - 0.000381 * z_eff) * tau
    k4 = 0.3585 + 0.0412 * ln_e
    rt = (0.659 - 0.00309 * z_eff) * (np.exp(-2.59 * (tau - 0.645)) + np.exp(k4 * (tau - 0.645)))
    x = (0.401 + 0.00187 * z_eff - tau) / (1.313 - 0.0686 * ln_e)
    p = (2.632 - 0.00094 * z_eff) * np.exp(x - np.exp(x))
    return rc, rt, np.clip(p, 1e-6, 1.0 - 1e-6)


def spot_counts(energy_gev: np.ndarray, z_eff: float, max_spots: int) -> np.ndarray:
    """GFLASH spot numbers 93 ln(Z) E^0.876, capped at max_spots sqrt(E / 10 GeV), at least 1."""
    energy_gev = np.asarray(energy_gev, float)
    n = 93.0 * math.log(z_eff) * energy_gev**0.876
    cap = max_spots * np.sqrt(energy_gev / SPOT_CAP_REFERENCE_GEV)
    return np.maximum(np.ceil(np.minimum(n, cap)), 1).astype(np.int64)


def normal_quantile(p: np.ndarray) -> np.ndarray:
    """Standard normal quantile (Acklam's approximation), for p in (0, 1)."""
    p = np.asarray(p, float)
    low = np.minimum(p, 1.0 - p)  # tails are symmetric
    q = np.sqrt(-2.0 * np.log(np.maximum(low, 1e-300)))
    tail = np.polyval(_C, q) / np.polyval(_D, q)  # quantile of `low` in the tails
    c = p - 0.5
    r = c * c
    centre = np.polyval(_A, r) * c / np.polyval(_B, r)
    return np.where(low < _P_LOW, np.where(p < 0.5, tail, -tail), centre)


def _wilson_hilferty(alpha: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Gamma(alpha, 1) at normal quantile z: alpha (1 - 1/(9 alpha) + z / (3 sqrt(alpha)))^3, >= 0."""
    x = np.maximum(1.0 - 1.0 / (9.0 * alpha) + z / (3.0 * np.sqrt(alpha)), 0.0)
    return alpha * x * x * x


def _normal_table(power: float) -> np.ndarray:
    """Normal quantiles of v^power at the centres of _TABLE_SIZE equal bins of v in (0, 1)."""
    v = (np.arange(_TABLE_SIZE) + 0.5) / _TABLE_SIZE
    return normal_quantile(v**power).astype(np.float32)


def lattice_uniforms(counts: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Three (S,) float32 uniforms per spot: each shower's R3 Kronecker lattice frac(k steps + U).

    Spot k of a shower gets frac(k * (1/phi, 1/phi^2, 1/phi^3) + U) with one random shift U per
    shower (a Cranley-Patterson rotation): every spot is uniform on the unit cube, and a
    shower's spots, or any slice of them in one coordinate, spread evenly over the others.
    """
    first = np.repeat(np.cumsum(counts) - counts, counts)
    k = (np.arange(len(first)) - first).astype(np.float32)
    shifts = rng.random((3, len(counts)), dtype=np.float32)
    out = []
    for step, shift in zip(_STEPS.astype(np.float32), shifts, strict=True):
        w = k * step + np.repeat(shift, counts)
        out.append(w - np.floor(w))
    return out


def sample_em_spots(
    energy_gev: np.ndarray,
    start_x0: np.ndarray,
    *,
    z_eff: float,
    critical_energy_mev: float,
    moliere_radius_cm: float,
    max_spots: int,
    rng: np.random.Generator,
) -> Spots:
    """Sample GFLASH energy spots of EM showers (see the module docstring); float32 spots.

    Args:
        energy_gev: (P,) shower energies.
        start_x0: (P,) depth along the flight path at which each shower starts (a photon's
            conversion point, a hadron's first interaction).
        z_eff, critical_energy_mev, moliere_radius_cm: material constants.
        max_spots: cap on the number of spots per shower.
        rng: random generator.

    Returns:
        The spots, depth in X0 along the flight path.
    """
    energy_gev = np.asarray(energy_gev, float)
    t_max, alpha = gflash_longitudinal(energy_gev, z_eff, critical_energy_mev).sample(rng)
    counts = spot_counts(energy_gev, z_eff, max_spots)
    owner = np.repeat(np.arange(len(energy_gev)), counts)
    w_depth, w_radius, w_azimuth = lattice_uniforms(counts, rng)

    def per_spot(x: np.ndarray) -> np.ndarray:  # (P,) shower constant -> (S,) float32
        return np.repeat(x.astype(np.float32), counts)

    # depth quantile q = v^EARLY (more, lighter spots early, in the strips); Wilson-Hilferty with
    # the normal quantile from a table of v
    z = _Z_EARLY[(w_depth * _TABLE_SIZE).astype(np.int32)]
    x = np.maximum(per_spot(1.0 - 1.0 / (9.0 * alpha)) + z * per_spot(1.0 / (3.0 * np.sqrt(alpha))), 0.0)
    tau = x * x * x * per_spot(alpha / (alpha - 1.0))  # t / T
    ln_e = np.log(np.maximum(energy_gev, 1e-3))
    rc, rt, p = gflash_radial(tau, per_spot(ln_e), z_eff)
    # importance sampling: CORE_SHARE of the spots from the core, radii from a WIDEN times wider
    # profile, each spot weighted by true / sampled density (see the module docstring)
    core = w_radius < CORE_SHARE
    u = np.minimum(np.where(core, w_radius / CORE_SHARE, (w_radius - CORE_SHARE) / (1.0 - CORE_SHARE)), _U_MAX)
    r = np.where(core, rc, rt) * np.sqrt(u / (1.0 - u)) * np.float32(WIDEN * moliere_radius_cm)
    weight = np.where(core, p / CORE_SHARE, (1.0 - p) / (1.0 - CORE_SHARE))
    weight *= (EARLY * w_depth ** (EARLY - 1.0)) * (WIDEN**2 / (1.0 + (WIDEN**2 - 1.0) * u) ** 2)
    total = np.bincount(owner, weight, len(energy_gev))  # (P,) normalise: energy is conserved
    energy = weight * per_spot(energy_gev * 1000.0 / np.where(total > 0, total, 1.0))
    angle = w_azimuth * np.float32(2.0 * math.pi)
    t = tau * per_spot(t_max) + per_spot(np.asarray(start_x0, float))
    return Spots(owner, t, r * np.cos(angle), r * np.sin(angle), energy)


def sample_hadron_spots(
    visible_mev: np.ndarray,
    start_lambda: np.ndarray,
    energy_gev: np.ndarray,
    *,
    n_spots: int,
    radius_cm: float,
    rng: np.random.Generator,
) -> Spots:
    """Sample the spots of hadronic showers (see the module docstring).

    Args:
        visible_mev: (H,) visible (EM-scale) energy of each shower.
        start_lambda: (H,) depth of the first interaction, interaction lengths along the path.
        energy_gev: (H,) available energy, sets the depth of the shower maximum.
        n_spots: spots per shower.
        radius_cm: lateral scale R.
        rng: random generator.

    Returns:
        The spots, depth in interaction lengths along the flight path.
    """
    counts = np.full(len(visible_mev), n_spots)
    owner = np.repeat(np.arange(len(visible_mev)), n_spots)
    shape = np.maximum(1.7 + 0.2 * np.log(np.maximum(energy_gev, 1e-3)), 1.2)
    w_depth, w_radius, w_azimuth = lattice_uniforms(counts, rng)
    depth = start_lambda[owner] + _wilson_hilferty(shape[owner], _Z_FLAT[(w_depth * _TABLE_SIZE).astype(np.int32)])
    u = np.minimum(w_radius, _U_MAX)
    r = radius_cm * np.sqrt(u / (1.0 - u))
    angle = w_azimuth * np.float32(2.0 * math.pi)
    dx, dy = r * np.cos(angle), r * np.sin(angle)
    return Spots(owner, depth, dx, dy, (np.asarray(visible_mev, float) / n_spots)[owner])


def hadron_em_fraction(energy_gev: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """EM (pi0) fraction of hadronic showers, Beta-distributed around 1 - (E / E0)^(k - 1).

    The mean is Groom's / Wigmans' power law (E0 = 1 GeV, k = 0.82: 0.34 at 10 GeV, 0.51 at
    50 GeV); shower-to-shower it fluctuates as Beta with concentration 10 (sigma ~ 0.15).
    """
    mean = np.clip(1.0 - (np.asarray(energy_gev, float) / HADRON_EM_E0_GEV) ** (HADRON_EM_K - 1.0), 0.0, 0.95)
    has_em = mean > 0.0
    out = np.zeros_like(mean)
    m = mean[has_em]
    out[has_em] = rng.beta(m * HADRON_EM_CONCENTRATION, (1.0 - m) * HADRON_EM_CONCENTRATION)
    return out


def sampling_fluctuations(cells_mev: np.ndarray, stochastic_term: float, rng: np.random.Generator) -> np.ndarray:
    """Cell energies with sampling fluctuations: Gamma of mean E and variance a^2 E (a^2 in MeV).

    Each cell fluctuates independently with sigma = a sqrt(E[GeV]) GeV, so a shower spread over
    many cells keeps the stochastic resolution a / sqrt(E) while the fluctuations stay local, as
    in a real sampling calorimeter; the Gamma keeps energies >= 0 without a clipping bias.
    Cells without positive energy are left as they are.
    """
    if stochastic_term == 0.0:
        return cells_mev
    scale = stochastic_term**2 * 1000.0  # a^2 GeV, in MeV
    shape = np.clip(cells_mev, 0.0, None) / scale
    return np.where(cells_mev > 0.0, rng.gamma(shape, scale), cells_mev)


_Z_EARLY = _normal_table(EARLY)
_Z_FLAT = _normal_table(1.0)
