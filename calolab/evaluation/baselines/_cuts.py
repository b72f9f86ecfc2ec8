"""The tight-like cut-based working point: one one-sided rectangular cut per variable.

Photon identification's reference (the ATLAS "tight" menu on the shower shapes,
arXiv:1606.01813), tuned here to a fixed signal efficiency on the training split. It is a
working point (:meth:`CutBasedTight.passes`), not a discriminant: its ``score`` is None. Its
:meth:`CutBasedTight.tightness` (the smallest margin to any cut) is still there for a scan that
loosens or tightens all cuts together.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Self

import numpy as np

from calolab.errors import ConfigError
from calolab.evaluation.baselines._base import (
    SHOWER_SHAPES,
    Baseline,
    check_fraction,
    columns,
    json_number,
    training_arrays,
    weighted_median,
)


class CutBasedTight(Baseline):
    """A tight-like rectangular-cut working point: one one-sided cut per variable.

    Fitting procedure (deterministic, on the training events only):

    1. Direction: each variable is cut from the side where background sits, ``"<"`` when the
       weighted signal median is below the background median (e.g. Rhad, weta2), ``">"``
       otherwise (e.g. Reta, Eratio).
    2. Greedy tightening: starting with every cut open, the joint signal efficiency is lowered in
       steps of ``step`` (1 - step, 1 - 2 step, ..., ``target_efficiency``). At each step every
       variable is offered the cut that alone, with the other cuts held, brings the *joint*
       signal efficiency down to that step's value; the variable whose offer leaves the least
       background is tightened. Correlations between variables are thus handled exactly, and a
       variable that never helps keeps an open cut (threshold +-inf).
    3. Thresholds sit half-way between neighbouring distinct values, so ``passes`` uses strict
       inequalities; events tied on a value are kept or dropped together, so the training signal
       efficiency reaches ``target_efficiency`` up to the weight of one tied group.

    Args:
        variables: the aux variables cut on (default: the photon shower shapes).
        target_efficiency: joint training signal efficiency of the working point.
        step: efficiency step of the greedy tightening.
        name: metric prefix (``test/baseline_eff``, ...).
        label: legend text.

    Attributes (after :meth:`fit`):
        cuts: variable -> ``("<" or ">", threshold)``; an event passes when ``value < threshold``
            (or ``>``) for every variable. NaN values fail.
        train_efficiency: joint signal efficiency on the training events.
        train_background_efficiency: joint background efficiency on the training events.
    """

    def __init__(
        self,
        variables: Sequence[str] = SHOWER_SHAPES,
        target_efficiency: float = 0.85,
        step: float = 0.01,
        name: str = "baseline",
        label: str = "Cut-based tight-like",
    ):
        super().__init__(variables, name=name, label=label)
        self.target_efficiency = check_fraction("target_efficiency", target_efficiency)
        if not 0.0 < float(step) <= 0.5:
            raise ConfigError(f"step must be in (0, 0.5], but got step={step!r}")
        self.step = float(step)
        self.cuts: dict[str, tuple[str, float]] = {}
        self._scale: dict[str, float] = {}
        self.train_efficiency = math.nan
        self.train_background_efficiency = math.nan

    def fit(self, aux: Mapping[str, np.ndarray], label: np.ndarray, weight: np.ndarray | None = None) -> Self:
        """Choose the cuts on training events; see the class docstring for the procedure."""
        x, y, w = training_arrays(aux, self.variables, label, weight)  # x: (N, V)
        n, n_var = x.shape
        ws, wb = np.where(y, w, 0.0), np.where(y, 0.0, w)
        w_sig, w_bkg = ws.sum(), wb.sum()

        signs = np.empty(n_var)
        for v in range(n_var):
            ms, mb = weighted_median(x[y, v], w[y]), weighted_median(x[~y, v], w[~y])
            if ms == mb:  # medians tie (e.g. a degenerate value): fall back on the means
                ms, mb = np.average(x[y, v], weights=w[y]), np.average(x[~y, v], weights=w[~y])
            signs[v] = 1.0 if ms <= mb else -1.0
        o = x * signs  # (N, V) oriented: every cut keeps o < t
        order = np.argsort(o, axis=0, kind="stable")
        o_sorted = np.take_along_axis(o, order, axis=0)
        t = np.full(n_var, np.inf)
        passing = np.ones((n, n_var), dtype=bool)

        n_steps = max(1, math.ceil((1.0 - self.target_efficiency) / self.step - 1e-9))
        for k in range(1, n_steps + 1):
            goal = max(1.0 - k * self.step, self.target_efficiency) * w_sig * (1 - 1e-12)
            n_pass = passing.sum(axis=1)
            best: tuple[float, float, int, float] | None = None
            for v in range(n_var):
                others = n_pass - passing[:, v] == n_var - 1
                cs = np.cumsum((ws * others)[order[:, v]])
                cb = np.cumsum((wb * others)[order[:, v]])
                i = int(np.searchsorted(cs, goal, side="left"))
                end = n if i >= n else int(np.searchsorted(o_sorted[:, v], o_sorted[i, v], side="right"))
                t_new = np.inf if end >= n else 0.5 * (o_sorted[end - 1, v] + o_sorted[end, v])
                t_new = min(t_new, t[v])  # cuts only ever tighten
                kept = int(np.searchsorted(o_sorted[:, v], t_new, side="left"))
                eb, es = (cb[kept - 1], cs[kept - 1]) if kept > 0 else (0.0, 0.0)
                cand = (eb, -es, v, t_new)
                if best is None or cand[:3] < best[:3]:
                    best = cand
            assert best is not None
            _, _, v, t_new = best
            t[v] = t_new
            passing[:, v] = o[:, v] < t_new

        self.cuts = {
            name: ("<" if signs[v] > 0 else ">", float(signs[v] * t[v])) for v, name in enumerate(self.variables)
        }
        sig = x[y]
        for v, name in enumerate(self.variables):
            q75, q25 = np.percentile(sig[:, v], [75, 25])
            scale = q75 - q25 or np.std(sig[:, v]) or 1.0
            self._scale[name] = float(scale)
        joint = passing.all(axis=1)
        self.train_efficiency = float(ws[joint].sum() / w_sig)
        self.train_background_efficiency = float(wb[joint].sum() / w_bkg)
        self._fitted = True
        return self

    def passes(self, aux: Mapping[str, np.ndarray]) -> np.ndarray:
        """(N,) bool: the events passing every cut (NaN fails)."""
        return self.tightness(aux) > 0

    def tightness(self, aux: Mapping[str, np.ndarray]) -> np.ndarray:
        """(N,) continuous tightness: the smallest margin to any active cut, in units of spread.

        Each margin is ``threshold - value`` (``value - threshold`` for ``">"``) divided by the
        training signal's interquartile range of that variable; ``tightness > 0`` is exactly
        :meth:`passes`, and scanning a threshold on it loosens or tightens all cuts together.
        NaN values get ``-inf`` (fail); with no active cut every event gets 1.
        """
        self._check_fitted()
        x = columns(aux, list(self.cuts), finite=False)
        out = np.ones(x.shape[0])
        margins = [
            ((thr - x[:, v]) if op == "<" else (x[:, v] - thr)) / self._scale[name]
            for v, (name, (op, thr)) in enumerate(self.cuts.items())
            if np.isfinite(thr)
        ]
        if margins:
            out = np.min(np.stack(margins, axis=1), axis=1)
        out[~np.all(np.isfinite(x), axis=1)] = -np.inf
        return out

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "cuts": {name: [op, json_number(thr)] for name, (op, thr) in self.cuts.items()},
            "target_efficiency": self.target_efficiency,
            "train_eff": json_number(self.train_efficiency),
            "train_bkg_eff": json_number(self.train_background_efficiency),
        }
