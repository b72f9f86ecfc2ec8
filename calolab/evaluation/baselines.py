"""Physics baselines a photon-ID network is compared with: tight-like cuts and a BDT on shower shapes.

:class:`CutBasedTight` is a rectangular-cut working point on the ATLAS shower-shape variables,
tuned like the "tight" menu to a fixed signal efficiency; :class:`ShowerShapeBDT` is scikit-learn's
``HistGradientBoostingClassifier`` on the same variables. Both are fitted on the training split
only and then applied to the test split, so the network and its baselines are compared on the
same unseen events. Inputs are mappings ``{variable: (N,) array}`` (the ``aux`` branches).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from contextlib import nullcontext

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from calolab.errors import ConfigError, suggest
from calolab.evaluation.metrics import _event_arrays

#: Below this many training events the BDT runs on one thread (see :class:`ShowerShapeBDT`).
BDT_SMALL_FIT = 50_000
#: The cut-based photon-ID variables (arXiv:1606.01813), as in the aux branches.
SHOWER_SHAPES: tuple[str, ...] = ("Rhad", "Reta", "Rphi", "weta2", "wstot", "ws3", "Eratio", "DeltaE", "fside")


def _columns(shapes: Mapping[str, np.ndarray], names: Sequence[str], *, finite: bool) -> np.ndarray:
    """Stack ``shapes[name]`` for ``names`` into an (N, V) float64 array, checking keys and lengths."""
    cols = []
    for name in names:
        if name not in shapes:
            raise ConfigError(
                f"variable {name!r} not in the shower shapes given (keys {sorted(shapes)}){suggest(name, shapes)}"
            )
        col = np.asarray(shapes[name], dtype=np.float64)
        if col.ndim != 1 or (cols and col.shape != cols[0].shape):
            raise ConfigError(
                f"variable {name!r}: expected a 1-d array of length {len(cols[0]) if cols else 'N'}, but got shape {col.shape}"
            )
        if finite and not np.all(np.isfinite(col)):
            raise ConfigError(
                f"variable {name!r}: expected finite values to fit on, but got {int(np.sum(~np.isfinite(col)))} NaN or inf"
            )
        cols.append(col)
    return np.stack(cols, axis=1)  # (N, V)


def _weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    order = np.argsort(x, kind="stable")
    cw = np.cumsum(w[order])
    return float(x[order][np.searchsorted(cw, 0.5 * cw[-1])])


class CutBasedTight:
    """A tight-like rectangular-cut working point: one one-sided cut per shower-shape variable.

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
    ):
        if isinstance(variables, str) or len(variables) == 0 or len(set(variables)) != len(variables):
            raise ConfigError(f"variables must be a non-empty sequence of distinct names, but got {variables!r}")
        if not 0.0 < float(target_efficiency) <= 1.0:
            raise ConfigError(f"target_efficiency must be in (0, 1], but got target_efficiency={target_efficiency!r}")
        if not 0.0 < float(step) <= 0.5:
            raise ConfigError(f"step must be in (0, 0.5], but got step={step!r}")
        self.variables = tuple(variables)
        self.target_efficiency = float(target_efficiency)
        self.step = float(step)
        self.cuts: dict[str, tuple[str, float]] = {}
        self._scale: dict[str, float] = {}
        self.train_efficiency = math.nan
        self.train_background_efficiency = math.nan

    def fit(
        self, shapes: Mapping[str, np.ndarray], label: np.ndarray, weight: np.ndarray | None = None
    ) -> CutBasedTight:
        """Choose the cuts on training events; see the class docstring for the procedure."""
        x = _columns(shapes, self.variables, finite=True)  # (N, V)
        y, _, w = _event_arrays(label, x[:, 0], weight, score_name=self.variables[0])
        n, n_var = x.shape
        ws, wb = np.where(y, w, 0.0), np.where(y, 0.0, w)
        w_sig, w_bkg = ws.sum(), wb.sum()

        signs = np.empty(n_var)
        for v in range(n_var):
            ms, mb = _weighted_median(x[y, v], w[y]), _weighted_median(x[~y, v], w[~y])
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
        return self

    def _check_fitted(self) -> None:
        if not self.cuts:
            raise ConfigError("CutBasedTight must be fitted before use, but fit() has not been called")

    def passes(self, shapes: Mapping[str, np.ndarray]) -> np.ndarray:
        """(N,) bool: the events passing every cut."""
        return self.score(shapes) > 0

    def score(self, shapes: Mapping[str, np.ndarray]) -> np.ndarray:
        """(N,) continuous tightness: the smallest margin to any active cut, in units of spread.

        Each margin is ``threshold - value`` (``value - threshold`` for ``">"``) divided by the
        training signal's interquartile range of that variable; ``score > 0`` is exactly
        :meth:`passes`, and scanning a threshold on it loosens or tightens all cuts together.
        NaN values get ``-inf`` (fail); with no active cut every event scores 1.
        """
        self._check_fitted()
        active = [name for name, (_, thr) in self.cuts.items() if np.isfinite(thr)]
        x = _columns(shapes, list(self.cuts), finite=False)
        out = np.ones(x.shape[0])
        if active:
            margins = []
            for v, (name, (op, thr)) in enumerate(self.cuts.items()):
                if name in active:
                    margins.append(((thr - x[:, v]) if op == "<" else (x[:, v] - thr)) / self._scale[name])
            out = np.min(np.stack(margins, axis=1), axis=1)
        bad = ~np.all(np.isfinite(x), axis=1)
        out[bad] = -np.inf
        return out


class ShowerShapeBDT:
    """Gradient-boosted trees (sklearn ``HistGradientBoostingClassifier``) on the shower shapes.

    Early stopping on the weighted validation loss of an internal, stratified
    ``validation_fraction`` of the training events; ``random_state`` fixes that split and the
    trees, so fits are reproducible. With ``kinematics=True`` ``ph_pt`` and ``|ph_eta|`` are added
    to the inputs (the trees can then learn the pT and eta dependence of the shapes).

    ``n_threads`` caps the OpenMP threads of fit and score; ``None`` means one thread for fits on
    fewer than ``BDT_SMALL_FIT`` events and all cores above. Small fits gain nothing from threads,
    and when another process holds a core OpenMP's spinning barriers make them many times slower
    (measured here: 20 s instead of 1.5 s for 1,500 events on two shared cores).
    """

    def __init__(
        self,
        variables: Sequence[str] = SHOWER_SHAPES,
        max_iter: int = 200,
        learning_rate: float = 0.1,
        random_state: int = 0,
        validation_fraction: float = 0.2,
        n_iter_no_change: int = 10,
        kinematics: bool = False,
        n_threads: int | None = None,
    ):
        if isinstance(variables, str) or len(variables) == 0:
            raise ConfigError(f"variables must be a non-empty sequence of names, but got {variables!r}")
        if not 0.0 < validation_fraction < 1.0:
            raise ConfigError(f"validation_fraction must be in (0, 1), but got {validation_fraction!r}")
        if n_threads is not None and n_threads < 1:
            raise ConfigError(f"n_threads must be >= 1 or None, but got n_threads={n_threads!r}")
        self.variables = tuple(variables)
        self.kinematics = bool(kinematics)
        self.n_threads = n_threads
        self._threads: int | None = n_threads
        self.model = HistGradientBoostingClassifier(
            max_iter=max_iter,
            learning_rate=learning_rate,
            early_stopping=True,
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change,
            random_state=random_state,
        )
        self._fitted = False

    def _features(self, shapes: Mapping[str, np.ndarray], *, finite: bool) -> np.ndarray:
        x = _columns(shapes, self.variables, finite=finite)
        if self.kinematics:
            kin = _columns(shapes, ("ph_pt", "ph_eta"), finite=finite)
            x = np.concatenate([x, kin[:, :1], np.abs(kin[:, 1:])], axis=1)  # (N, V + 2)
        return x

    def fit(
        self, shapes: Mapping[str, np.ndarray], label: np.ndarray, weight: np.ndarray | None = None
    ) -> ShowerShapeBDT:
        """Train on the training events (weighted), stopping early on the internal validation set."""
        x = self._features(shapes, finite=True)
        y, _, w = _event_arrays(label, x[:, 0], weight, score_name=self.variables[0])
        if self.n_threads is None:
            self._threads = 1 if len(y) < BDT_SMALL_FIT else None
        with self._thread_limit():
            self.model.fit(x, y.astype(np.int64), sample_weight=w)
        self._fitted = True
        return self

    def _thread_limit(self):
        return nullcontext() if self._threads is None else threadpool_limits(limits=self._threads, user_api="openmp")

    def score(self, shapes: Mapping[str, np.ndarray]) -> np.ndarray:
        """(N,) signal probability in [0, 1]."""
        if not self._fitted:
            raise ConfigError("ShowerShapeBDT must be fitted before use, but fit() has not been called")
        x = self._features(shapes, finite=False)
        with self._thread_limit():
            return self.model.predict_proba(x)[:, 1]
