"""A projective likelihood on cluster moments: the EM-probability-like baseline of pi0 / pi+- classification.

ATLAS's local hadronic calibration classifies topo-clusters as electromagnetic or hadronic with an
"EM probability" read from histograms of cluster moments (energy density, depth of the shower
centre, ...) of single pi0 and pi+- in bins of cluster energy and eta. :class:`ProjectiveLikelihood`
is that idea on any aux variables: in each bin of ``condition`` (e.g. the log of the cluster
energy; bins of equal training population), each variable's signal and background histograms
(edges at training quantiles) give a likelihood ratio, and the probability is
``L_s / (L_s + L_b)`` with the product of the per-variable ratios (a naive-Bayes combination: the
correlations between moments are ignored, which is what separates it from a BDT on the same
moments). It is fitted on the training split only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Self

import numpy as np

from calolab.errors import ConfigError
from calolab.evaluation.baselines._base import Baseline, columns, training_arrays


def _quantile_edges(x: np.ndarray, n: int) -> np.ndarray:
    """Inner edges at the training quantiles, duplicates (ties) removed."""
    return np.unique(np.quantile(x, np.linspace(0.0, 1.0, n + 1)[1:-1]))


class ProjectiveLikelihood(Baseline):
    """EM-probability-like projective likelihood of ``variables`` in bins of ``condition`` (see module docstring).

    Args:
        variables: the moments combined.
        condition: the variable binned in (e.g. ``cluster_e``), or None for one bin.
        log_condition: bin in log(condition) (energies).
        condition_bins: bins of ``condition`` (equal training population).
        bins: histogram bins per variable (equal training population over both classes).
        name: metric prefix (``test/<name>_auc``).
        label: legend text.
    """

    def __init__(
        self,
        variables: Sequence[str],
        condition: str | None = "cluster_e",
        log_condition: bool = True,
        condition_bins: int = 6,
        bins: int = 20,
        name: str = "em_prob",
        label: str = "EM probability (likelihood)",
    ):
        super().__init__(variables, name=name, label=label)
        for what, value in (("condition_bins", condition_bins), ("bins", bins)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{what} must be an integer >= 1, but got {what}={value!r}")
        if condition is not None and condition in self.variables:
            raise ConfigError(f"condition {condition!r} must not be one of the variables {list(self.variables)}")
        self.condition = condition
        self.log_condition = bool(log_condition)
        self.condition_bins = condition_bins
        self.bins = bins
        self._cond_edges = np.zeros(0)
        self._edges: list[np.ndarray] = []
        self._log_ratio: np.ndarray | None = None  # (condition bins, variables, bins)

    def _condition(self, aux: Mapping[str, np.ndarray], finite: bool) -> np.ndarray:
        if self.condition is None:
            return np.zeros(len(next(iter(aux.values()))))
        c = columns(aux, (self.condition,), finite=finite)[:, 0]
        return np.log(np.maximum(c, 1e-9)) if self.log_condition else c

    def fit(self, aux: Mapping[str, np.ndarray], label: np.ndarray, weight: np.ndarray | None = None) -> Self:
        """Histogram each variable per class and condition bin on the training split."""
        x, y, w = training_arrays(aux, self.variables, label, weight)
        cond = self._condition(aux, finite=True)
        self._cond_edges = _quantile_edges(cond, self.condition_bins) if self.condition is not None else np.zeros(0)
        self._edges = [_quantile_edges(x[:, v], self.bins) for v in range(x.shape[1])]
        c_idx = np.searchsorted(self._cond_edges, cond, side="right")
        n_cond = len(self._cond_edges) + 1
        ratio = np.zeros((n_cond, x.shape[1], max(len(e) + 1 for e in self._edges)))
        for v, edges in enumerate(self._edges):
            idx = np.searchsorted(edges, x[:, v], side="right")
            for c in range(n_cond):
                sel = c_idx == c
                hist = []
                for cls in (True, False):
                    h = np.bincount(idx[sel & (y == cls)], w[sel & (y == cls)], minlength=len(edges) + 1)
                    h = h + 1e-3 * max(h.sum(), 1e-12) / len(h)  # a small floor: no empty-bin infinities
                    hist.append(h / h.sum())
                ratio[c, v, : len(edges) + 1] = np.log(hist[0] / hist[1])
        self._log_ratio = ratio
        self._fitted = True
        return self

    def score(self, aux: Mapping[str, np.ndarray]) -> np.ndarray:
        """(N,) the probability L_s / (L_s + L_b) in [0, 1]; NaN variables count as uninformative."""
        self._check_fitted()
        x = columns(aux, self.variables, finite=False)
        c_idx = np.searchsorted(self._cond_edges, self._condition(aux, finite=False), side="right")
        total = np.zeros(len(x))
        for v, edges in enumerate(self._edges):
            idx = np.searchsorted(edges, x[:, v], side="right")
            total += np.where(np.isfinite(x[:, v]), self._log_ratio[c_idx, v, idx], 0.0)
        return 1.0 / (1.0 + np.exp(-np.clip(total, -50.0, 50.0)))

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "condition": self.condition,
            "condition_bins": int(len(self._cond_edges) + 1) if self._fitted else None,
            "bins": self.bins,
        }
