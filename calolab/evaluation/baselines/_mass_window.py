"""The cut-based W tagger: a jet-mass window around the W mass, then a cut on tau21.

This is the physics reference of the W-tagging papers (arXiv:1511.05190 compares its networks
with "mass window + tau21"): keep jets whose mass is near m_W, then the two-prong ones (low
N-subjettiness ratio). :class:`MassWindowCut` gives both the discriminant (tau21 scanned inside
the window) and one working point (a tau21 cut fitted on the training signal).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Self

import numpy as np

from calolab.errors import ConfigError
from calolab.evaluation.baselines._base import (
    Baseline,
    check_direction,
    check_fraction,
    columns,
    json_number,
    threshold_keeping,
    training_arrays,
)

#: 65-105 GeV in MeV (the unit of the ``jet_m`` aux branch): the V-tagging window of the CMS
#: 13 TeV diboson searches, wide enough for the ~10 GeV resolution of a trimmed R = 1.0 jet mass
#: at 250-300 GeV and for its high tail, and close to LAGAN's 60-100 GeV slice.
W_WINDOW_MEV = (65_000.0, 105_000.0)


class MassWindowCut(Baseline):
    """A mass window AND a cut on a second variable (tau21): the classic cut-based W tagger.

    Score (the discriminant): inside the window ``lo <= mass < hi`` the oriented second variable
    (``-tau21`` for ``direction="lower"``); outside it, or where either value is missing,
    ``-inf``. Scanning a threshold on it therefore tightens the tau21 cut inside a fixed window,
    and its ROC curve stops at the window's own efficiency: no cut on the score can keep more.

    Working point (``passes``): inside the window and past the tau21 cut that keeps
    ``target_efficiency`` of the *training signal inside the window* (weighted; events tied on a
    value are kept together, and the threshold sits half-way between neighbouring values). The
    working point's overall signal efficiency is thus about ``window_efficiency x
    target_efficiency`` (e.g. 0.7 x 0.5 = 0.35), both fitted on the training split only.

    Args:
        mass_variable: the aux variable of the window (``jet_m``, MeV).
        window: ``(low, high)`` edges in the variable's unit; see :data:`W_WINDOW_MEV`.
        then_variable: the variable cut inside the window (``jet_tau21``).
        direction: where signal sits in ``then_variable``: ``lower`` (two-prong W jets) or ``higher``.
        target_efficiency: fraction of the in-window training signal the working point keeps.
        name: metric prefix (``test/mass_tau21_auc``, ...).
        label: legend text (change it with ``then_variable``).

    Attributes (after :meth:`fit`):
        cut: ``("<" or ">", threshold)`` on ``then_variable`` (threshold +-inf: no cut).
        window_efficiency: training signal efficiency of the window alone.
        train_efficiency, train_background_efficiency: of the working point on the training split.
    """

    def __init__(
        self,
        mass_variable: str = "jet_m",
        window: Sequence[float] = W_WINDOW_MEV,
        then_variable: str = "jet_tau21",
        direction: str = "lower",
        target_efficiency: float = 0.5,
        name: str = "mass_tau21",
        label: str = r"Mass window + $\tau_{21}$",
    ):
        self.sign = check_direction(direction)
        super().__init__((mass_variable, then_variable), name=name, label=label)
        try:
            lo, hi = (float(edge) for edge in window)
        except (TypeError, ValueError):
            lo = hi = math.nan
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ConfigError(f"window must be two finite edges (low, high) with low < high, but got window={window!r}")
        self.mass_variable, self.then_variable = mass_variable, then_variable
        self.window = (lo, hi)
        self.direction = direction
        self.target_efficiency = check_fraction("target_efficiency", target_efficiency)
        self.cut: tuple[str, float] = ("<" if self.sign < 0 else ">", math.nan)
        self._threshold = math.nan  # on the oriented variable: passes when sign * value > threshold
        self.window_efficiency = math.nan
        self.train_efficiency = math.nan
        self.train_background_efficiency = math.nan

    def _oriented(self, x: np.ndarray) -> np.ndarray:
        """(N,) the oriented second variable inside the window, -inf outside or where a value is missing."""
        mass, then = x[:, 0], x[:, 1]
        keep = np.isfinite(then) & (mass >= self.window[0]) & (mass < self.window[1])  # NaN mass: outside
        return np.where(keep, self.sign * then, -np.inf)

    def fit(self, aux: Mapping[str, np.ndarray], label: np.ndarray, weight: np.ndarray | None = None) -> Self:
        """Measure the window on the training split and fit the working point's cut inside it."""
        x, y, w = training_arrays(aux, self.variables, label, weight)
        o = self._oriented(x)
        inside = np.isfinite(o)
        sig_in = y & inside
        if not w[sig_in].sum() > 0:
            mass = x[y, 0]
            raise ConfigError(
                f"expected training signal inside the {self.mass_variable!r} window {list(self.window)}, but got none "
                f"(training signal spans {mass.min():g} to {mass.max():g}); is the window in the variable's unit "
                "(jet_m is in MeV)?"
            )
        self._threshold = threshold_keeping(o[sig_in], w[sig_in], self.target_efficiency)
        self.cut = ("<" if self.sign < 0 else ">", float(self.sign * self._threshold))
        passing = o > self._threshold
        w_sig, w_bkg = w[y].sum(), w[~y].sum()
        self.window_efficiency = float(w[sig_in].sum() / w_sig)
        self.train_efficiency = float(w[y & passing].sum() / w_sig)
        self.train_background_efficiency = float(w[~y & passing].sum() / w_bkg)
        self._fitted = True
        return self

    def score(self, aux: Mapping[str, np.ndarray]) -> np.ndarray:
        """(N,) oriented ``then_variable`` inside the window, ``-inf`` outside."""
        self._check_fitted()
        return self._oriented(columns(aux, self.variables, finite=False))

    def passes(self, aux: Mapping[str, np.ndarray]) -> np.ndarray:
        """(N,) bool: inside the window and past the fitted cut."""
        return self.score(aux) > self._threshold

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "window": list(self.window),
            "cut": [self.cut[0], json_number(self.cut[1])],
            "target_efficiency": self.target_efficiency,
            "window_eff": json_number(self.window_efficiency),
            "train_eff": json_number(self.train_efficiency),
            "train_bkg_eff": json_number(self.train_background_efficiency),
        }
