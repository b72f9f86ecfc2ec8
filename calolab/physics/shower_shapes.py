"""ATLAS photon-identification shower shapes computed from per-layer cell windows.

:func:`compute_shower_shapes` turns the four cell windows of a cluster (EMB1 strips, EMB2 middle,
EMB3 back, TileBar0; MeV, axis order eta, phi) into the cut-based photon-ID variables of ATLAS
(arXiv:1606.01813, arXiv:1908.00005). It is used both when generating samples and on users'
ntuples, so it validates its input and never returns NaN or inf: every ratio or width whose
denominator is not positive (<= 1e-3 MeV) takes a documented degenerate value instead.

The EMB2 window is taken as centred on the cluster's hottest cell: index ``(n - 1) // 2`` along
eta and phi, which is how :class:`calolab.generation.calorimeter.EMCalorimeter` places it. The
strip window is taken as covering the same eta range (strip ``n // 2`` at its centre).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from calolab.errors import CalolabError

LAYERS = ("EMB1", "EMB2", "EMB3", "TileBar0")
SHAPE_NAMES = ("Rhad", "Reta", "Rphi", "weta2", "wstot", "ws3", "Eratio", "DeltaE", "fside")
#: Smallest (eta, phi) sizes per layer the definitions need.
MIN_SHAPES = {"EMB1": (7, 1), "EMB2": (7, 7), "EMB3": (1, 1), "TileBar0": (1, 1)}
#: EMB2 cell size in eta: weta2 is in eta units.
MIDDLE_D_ETA = 0.025
#: Energies (MeV) at or below this count as zero in denominators.
EPS_MEV = 1e-3
#: Strips (Delta eta = 0.125) around the hottest middle cell searched for the maxima (ATLAS
#: egammaStripsShape); wstot uses the central half of them.
STRIP_REGION = 40
#: fside is only computed when the hottest strip holds more than this (ATLAS).
FSIDE_MIN_MEV = 60.0


class CellShapeError(CalolabError, ValueError):
    """A cell window is missing, has the wrong shape or holds non-finite values."""


def _layer(cells: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    for key in (f"cells_{name}", name):
        if key in cells:
            a = np.asarray(cells[key], dtype=np.float64)
            break
    else:
        raise CellShapeError(f"layer {name}: expected key 'cells_{name}' (or '{name}'), but got keys {sorted(cells)}")
    lo = MIN_SHAPES[name]
    if a.ndim != 3 or a.shape[1] < lo[0] or a.shape[2] < lo[1]:
        raise CellShapeError(f"layer {name}: expected shape (N, >={lo[0]}, >={lo[1]}), but got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise CellShapeError(f"layer {name}: expected finite cell energies, but got NaN or inf")
    return a


def _ratio(num: np.ndarray, den: np.ndarray, degenerate: float) -> np.ndarray:
    ok = den > EPS_MEV
    return np.where(ok, num / np.where(ok, den, 1.0), degenerate)


def _width(energy: np.ndarray, position: np.ndarray, *, about_mean: bool) -> np.ndarray:
    """sqrt of the energy-weighted second moment of ``position`` along the last axis (0 if no energy)."""
    total = energy.sum(axis=-1)
    safe = np.where(total > EPS_MEV, total, 1.0)
    m2 = (energy * position**2).sum(axis=-1) / safe
    if about_mean:
        m2 = m2 - ((energy * position).sum(axis=-1) / safe) ** 2
    return np.where(total > EPS_MEV, np.sqrt(np.clip(m2, 0.0, None)), 0.0)


def _middle_shapes(c2: np.ndarray) -> dict[str, np.ndarray]:
    ce, cp = (c2.shape[1] - 1) // 2, (c2.shape[2] - 1) // 2  # the hottest cell (>= 3 from the edges)
    e7x7 = c2[:, ce - 3 : ce + 4, cp - 3 : cp + 4].sum(axis=(1, 2))
    e3x7 = c2[:, ce - 1 : ce + 2, cp - 3 : cp + 4].sum(axis=(1, 2))
    e3x3 = c2[:, ce - 1 : ce + 2, cp - 1 : cp + 2].sum(axis=(1, 2))
    eta_profile = c2[:, ce - 1 : ce + 2, cp - 2 : cp + 3].sum(axis=2)  # (N, 3): 3x5 summed over phi
    return {
        "Reta": _ratio(e3x7, e7x7, 0.0),
        "Rphi": _ratio(e3x3, e3x7, 0.0),
        "weta2": _width(eta_profile, np.array([-1.0, 0.0, 1.0]) * MIDDLE_D_ETA, about_mean=True),
    }


def _strip_shapes(strips: np.ndarray) -> dict[str, np.ndarray]:
    n, width = strips.shape
    idx = np.arange(width)
    centre = width // 2  # the centre of the hottest middle cell
    in40 = np.abs(idx + 0.5 - centre) < STRIP_REGION / 2  # (strips,) the 40-strip region
    in20 = np.abs(idx + 0.5 - centre) < STRIP_REGION / 4
    rows = np.arange(n)
    imax = np.argmax(np.where(in40, strips, -np.inf), axis=1)  # (N,)
    e1 = strips[rows, imax]
    dist = idx[None, :] - imax[:, None]  # (N, strips) offset from the hottest strip
    wstot = _width(np.where(in20, strips, 0.0), dist.astype(float), about_mean=False)
    ws3 = _width(np.where(np.abs(dist) <= 1, strips, 0.0), dist.astype(float), about_mean=False)
    e3 = np.where(np.abs(dist) <= 1, strips, 0.0).sum(axis=1)
    e7 = np.where(np.abs(dist) <= 3, strips, 0.0).sum(axis=1)
    # second maximum: a positive strip above both neighbours inside the region, not the hottest
    inner = strips[:, 1:-1]
    is_max = np.pad((inner > strips[:, :-2]) & (inner > strips[:, 2:]) & (inner > 0.0), ((0, 0), (1, 1)))
    region = in40 & np.roll(in40, 1) & np.roll(in40, -1)  # neighbours inside the region too
    is_max &= region[None, :] & (dist != 0)
    i2 = np.argmax(np.where(is_max, strips, -np.inf), axis=1)
    has2 = is_max[rows, i2] & (e1 > 0.0)
    e2 = np.where(has2, strips[rows, i2], 0.0)
    lo, hi = np.minimum(imax, i2), np.maximum(imax, i2)
    between = (idx[None, :] > lo[:, None]) & (idx[None, :] < hi[:, None])
    e_min = np.where(between, strips, np.inf).min(axis=1)
    return {
        "wstot": wstot,
        "ws3": ws3,
        "Eratio": np.where(e1 > 0.0, _ratio(e1 - e2, e1 + e2, 0.0), 0.0),
        "DeltaE": np.where(has2 & np.isfinite(e_min), e2 - e_min, 0.0),
        "fside": np.where(e1 > FSIDE_MIN_MEV, _ratio(e7 - e3, e3, 0.0), 0.0),
    }


def compute_shower_shapes(cells: Mapping[str, np.ndarray], eta: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """ATLAS photon-ID shower shapes of N clusters.

    Definitions follow ATLAS (egammaMiddleShape / egammaStripsShape). E in MeV; EMB2 windows in
    eta x phi cells around the hottest cell. Strips are the EMB1 window summed over phi; the strip
    *region* is the 40 strips (Delta eta = 0.125) centred on the hottest EMB2 cell, and i_max is
    the hottest strip in it.

    * ``Rhad`` = E_T(TileBar0 window) / E_T(EMB1 + EMB2 + EMB3 windows) (ATLAS Rhad1).
      Degenerate (EM E_T <= 0): 0.
    * ``Reta`` = E(3x7) / E(7x7) in EMB2. Degenerate: 0.
    * ``Rphi`` = E(3x3) / E(3x7) in EMB2. Degenerate: 0.
    * ``weta2`` = sqrt(sum E_i eta_i^2 / sum E_i - (sum E_i eta_i / sum E_i)^2) over the 3x5
      EMB2 cells, eta_i the cell centres (0.025 apart): in eta units, without ATLAS's
      impact-point correction. Degenerate: 0.
    * ``wstot`` = sqrt(sum E_i (i - i_max)^2 / sum E_i) over the central 20 strips of the region
      (Delta eta = 0.0625 around the hottest EMB2 cell), in strip units. Degenerate: 0.
    * ``ws3`` = the same over the 3 strips i_max - 1 .. i_max + 1. Degenerate: 0.
    * ``Eratio`` = (E1max - E2max) / (E1max + E2max): E1max the hottest strip, E2max the highest
      other strip of the region that is positive and above both its neighbours, 0 if there is
      none (Eratio = 1). Degenerate (E1max <= 0): 0.
    * ``DeltaE`` = E2max - Emin, Emin the lowest strip between the two maxima; 0 without a
      second maximum.
    * ``fside`` = (E(i_max +- 3) - E(i_max +- 1)) / E(i_max +- 1), 7 and 3 strips. Degenerate
      (E1max <= 60 MeV, ATLAS's threshold, or E(3) <= 0): 0.

    Negative (noise) cell energies are used as they are; widths take sqrt(max(variance, 0)).

    Args:
        cells: per-layer windows (N, n_eta, n_phi) under ``cells_<layer>`` or ``<layer>`` for
            EMB1, EMB2, EMB3 and TileBar0; EMB2 at least 7x7, EMB1 at least 7 strips.
        eta: optional (N,) cluster eta. Both E_T's of Rhad are E / cosh(eta) with this one eta,
            so it cancels in the ratio; it is checked and accepted for callers that hold it.

    Returns:
        float32 (N,) arrays under the names above.

    Raises:
        CellShapeError: a layer is missing, has the wrong shape, disagrees on N or is not finite.
    """
    arrays = {name: _layer(cells, name) for name in LAYERS}
    n = len(arrays["EMB2"])
    for name, a in arrays.items():
        if len(a) != n:
            raise CellShapeError(f"layer {name}: expected {n} clusters (as EMB2), but got shape {a.shape}")
    cosh = np.ones(n)
    if eta is not None:
        eta = np.asarray(eta, dtype=np.float64)
        if eta.shape != (n,) or not np.all(np.isfinite(eta)):
            raise CellShapeError(f"eta: expected finite values of shape ({n},), but got shape {eta.shape}")
        cosh = np.cosh(eta)
    em_et = sum(arrays[k].sum(axis=(1, 2)) for k in ("EMB1", "EMB2", "EMB3")) / cosh
    had_et = arrays["TileBar0"].sum(axis=(1, 2)) / cosh
    out = {"Rhad": _ratio(had_et, em_et, 0.0)}
    out.update(_middle_shapes(arrays["EMB2"]))
    out.update(_strip_shapes(arrays["EMB1"].sum(axis=2)))
    return {k: np.asarray(out[k], dtype=np.float32) for k in SHAPE_NAMES}
