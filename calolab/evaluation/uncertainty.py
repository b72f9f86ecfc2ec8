"""Statistical uncertainties of reported figures: intervals, bounds, comparisons and how they print.

One module for every experiment's headline numbers (issue 17). An efficiency gets a Wilson score
interval on *effective* counts (a weighted sample of total weight W and sum of squares W2 is
worth n_eff = W^2 / W2 unweighted events), a rejection 1/eps_B the inverted interval of its
background efficiency; a rejection whose cut keeps no background is not a measurement: it is
reported as the lower limit of that interval (about n_eff + 1) and flagged as a bound. AUCs and
differences between two discriminants on the same events come from the paired Poisson bootstrap
of :mod:`calolab.evaluation.bootstrap`. A difference is *resolved* when it exceeds
:data:`RESOLVED_SIGMA` standard deviations and neither side is a bound.

Metric keys (next to a figure ``test/<name>``): ``test/<name>_err`` (a symmetric standard
deviation, bootstrap), or ``test/<name>_err_lo`` / ``_err_hi`` (the 68% interval's distances
below and above the value, binomial), and ``test/<name>_is_bound`` = 1 when the value is a lower
bound (0 otherwise). A comparison ``test/<a>_vs_<b>`` holds a - b and ``test/<a>_vs_<b>_err``
its paired-bootstrap standard deviation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

#: suffixes of the uncertainty metrics logged next to a figure
ERR, ERR_LO, ERR_HI, IS_BOUND = "_err", "_err_lo", "_err_hi", "_is_bound"
#: a comparison key is ``<a>_vs_<b>``
VS = "_vs_"
#: a difference larger than this many standard deviations is resolved
RESOLVED_SIGMA = 2.0
#: a bootstrapped figure unresolved (no background passing) in more replicas than this is a bound
UNRESOLVED_FRACTION = 0.05
#: the effective signal and background counts of the test split (metric keys)
N_SIGNAL_EFF = "test/n_signal_eff"
N_BACKGROUND_EFF = "test/n_background_eff"


def effective_count(weight: np.ndarray) -> float:
    """(sum w)^2 / sum w^2: how many unweighted events a weighted sample is worth (0 when empty)."""
    w = np.asarray(weight, dtype=np.float64)
    w2 = float((w**2).sum())
    return float(w.sum() ** 2 / w2) if w2 > 0 else 0.0


def wilson_interval(eff: float, n_eff: float, z: float = 1.0) -> tuple[float, float]:
    """Wilson score interval of an efficiency measured on ``n_eff`` (effective) trials, at ``z`` sigma.

    Unlike the normal approximation it stays inside [0, 1] and is not empty at eff = 0 or 1: with
    no event passing the upper end is z^2 / (n + z^2).
    """
    if not n_eff > 0:
        return 0.0, 1.0
    p = min(max(float(eff), 0.0), 1.0)
    den = 1.0 + z * z / n_eff
    centre = (p + z * z / (2 * n_eff)) / den
    half = z * math.sqrt(p * (1 - p) / n_eff + z * z / (4 * n_eff * n_eff)) / den
    return max(centre - half, 0.0), min(centre + half, 1.0)


@dataclass(frozen=True)
class Measurement:
    """A figure with its 68% interval ``[value - err_lo, value + err_hi]``; a bound has no upper side.

    Attributes:
        value: the figure; for a bound, the lower limit.
        err_lo, err_hi: distances to the interval's ends (err_hi is inf for a bound).
        is_bound: the sample cannot resolve the figure; ``value`` is a lower limit.
    """

    value: float
    err_lo: float
    err_hi: float
    is_bound: bool = False

    @property
    def err(self) -> float:
        """A symmetric standard deviation: the mean of the two sides (inf for a bound)."""
        return math.inf if self.is_bound else 0.5 * (self.err_lo + self.err_hi)

    def metrics(self, key: str, flag: bool = True) -> dict[str, float]:
        """``key`` and its uncertainty metrics (an infinite side is left out: MLflow takes finite values).

        ``flag``: add ``key_is_bound`` (0 or 1); rejections carry it, efficiencies are never bounds.
        """
        out = {key: self.value, key + ERR_LO: self.err_lo}
        if flag or self.is_bound:
            out[key + IS_BOUND] = float(self.is_bound)
        if math.isfinite(self.err_hi):
            out[key + ERR_HI] = self.err_hi
        return out

    def __str__(self) -> str:
        if self.is_bound:
            return f"> {self.value:.4g}"
        if math.isclose(self.err_lo, self.err_hi, rel_tol=0.1):
            return f"{self.value:.4g} +- {self.err:.2g}"
        return f"{self.value:.4g} +{self.err_hi:.2g} -{self.err_lo:.2g}"


def efficiency(w_pass: float, w_all: float, n_eff: float) -> Measurement:
    """Weighted efficiency ``w_pass / w_all`` with its Wilson interval on ``n_eff`` effective events."""
    eff = w_pass / w_all
    lo, hi = wilson_interval(eff, n_eff)
    return Measurement(eff, eff - lo, hi - eff)


def rejection(eps_b: float, n_eff_bkg: float, max_rejection: float = math.inf) -> Measurement:
    """Background rejection 1/eps_B with the inverted Wilson interval of eps_B.

    With eps_B = 0 (no background passes) the rejection is a lower bound: 1 / (the interval's upper
    end), about n_eff + 1, and never more than ``max_rejection`` (sum w / min w: the largest
    rejection the sample can express at all).
    """
    lo, hi = wilson_interval(eps_b, n_eff_bkg)
    if eps_b <= 0:
        bound = min(1.0 / hi, max_rejection) if hi > 0 else max_rejection
        return Measurement(bound, 0.0, math.inf, is_bound=True)
    value = 1.0 / eps_b
    return Measurement(value, value - 1.0 / hi, (1.0 / lo - value) if lo > 0 else math.inf)


def bootstrapped(value: float, replicas: np.ndarray) -> Measurement:
    """``value`` with the standard deviation of its bootstrap replicas on both sides."""
    from calolab.evaluation.bootstrap import spread

    err = spread(replicas)
    return Measurement(float(value), err, err)


def hanley_mcneil(auc: float, n_sig: float, n_bkg: float) -> float:
    """Closed-form standard deviation of an AUC on ``n_sig`` signal and ``n_bkg`` background events.

    Hanley & McNeil (1982), Radiology 143, 29: the exponential-score approximation; with
    effective counts it is the cheap error where no bootstrap is run.
    """
    a = min(max(float(auc), 1e-12), 1 - 1e-12)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_sig - 1) * (q1 - a * a) + (n_bkg - 1) * (q2 - a * a)) / (n_sig * n_bkg)
    return math.sqrt(max(var, 0.0))


def is_resolved(diff: float, err: float) -> bool:
    """Whether a difference ``diff +- err`` is resolved: ``|diff|`` > :data:`RESOLVED_SIGMA` x ``err``."""
    return math.isfinite(err) and abs(diff) > RESOLVED_SIGMA * err


def verdict(diff: float, err: float) -> str:
    """``"resolved"`` or ``"not resolved"`` (:func:`is_resolved`), as every table and summary says it."""
    return "resolved" if is_resolved(diff, err) else "not resolved"


@dataclass(frozen=True)
class Comparison:
    """``a - b`` of one figure for two discriminants on the same events, with its paired uncertainty.

    Attributes:
        a, b: what is compared (display names).
        figure: the figure compared (``AUC``, ``efficiency at <wp> rejection``).
        diff, err: the difference and its standard deviation.
        n_sig_eff, n_bkg_eff: the effective event counts behind it.
        bound: one side is a bound (or too many replicas were unresolved): no number to compare.
    """

    a: str
    b: str
    figure: str
    diff: float
    err: float
    n_sig_eff: float
    n_bkg_eff: float
    bound: bool = False

    @property
    def resolved(self) -> bool:
        return not self.bound and is_resolved(self.diff, self.err)

    @property
    def significance(self) -> float:
        """|diff| / err (inf when err = 0, NaN for a bound)."""
        if self.bound or not math.isfinite(self.err):
            return math.nan
        return math.inf if self.err == 0 else abs(self.diff) / self.err

    def line(self) -> str:
        """``Network vs BDT (AUC): +0.103 +- 0.012 (resolved; n_eff 3040 sig / 327 bkg)``."""
        counts = f"n_eff {self.n_sig_eff:.0f} sig / {self.n_bkg_eff:.0f} bkg"
        if self.bound:
            return f"{self.a} vs {self.b} ({self.figure}): not resolved (a bound, not a measurement; {counts})"
        return f"{self.a} vs {self.b} ({self.figure}): {self.diff:+.3g} +- {self.err:.2g} ({verdict(self.diff, self.err)}; {counts})"

    def as_dict(self) -> dict[str, object]:
        return {
            "a": self.a,
            "b": self.b,
            "figure": self.figure,
            "diff": self.diff,
            "err": self.err,
            "n_signal_eff": self.n_sig_eff,
            "n_background_eff": self.n_bkg_eff,
            "bound": self.bound,
            "resolved": self.resolved,
            "line": self.line(),
        }


def format_metric(metrics: Mapping[str, float], key: str) -> str:
    """``metrics[key]`` with whatever uncertainty is logged beside it: ``0.912 +- 0.004``, ``> 328``."""
    value = metrics[key]
    if metrics.get(key + IS_BOUND, 0.0) >= 0.5:
        return f"> {value:.4g} (bound: no background passes)"
    if key + ERR_LO in metrics:
        hi = metrics.get(key + ERR_HI, math.inf)
        return str(Measurement(value, metrics[key + ERR_LO], hi))
    if key + ERR in metrics:
        return f"{value:.4g} +- {metrics[key + ERR]:.2g}"
    return f"{value:.4g}"


def is_uncertainty_key(key: str) -> bool:
    """Whether ``key`` is an uncertainty companion (``..._err``, ``..._is_bound``) rather than a figure."""
    return key.endswith((ERR, ERR_LO, ERR_HI, IS_BOUND))


def comparison_lines(metrics: Mapping[str, float], net: str = "net") -> list[str]:
    """The comparisons logged as ``test/<a>_vs_<b>`` (+ ``_err``), as summary lines with the effective counts."""
    counts = ""
    if N_SIGNAL_EFF in metrics and N_BACKGROUND_EFF in metrics:
        counts = f"; n_eff {metrics[N_SIGNAL_EFF]:.0f} sig / {metrics[N_BACKGROUND_EFF]:.0f} bkg"
    lines = []
    for key in sorted(k for k in metrics if VS in k and not is_uncertainty_key(k)):
        a, b = key.removeprefix("test/").split(VS, 1)
        diff, err = metrics[key], metrics.get(key + ERR, math.nan)
        if metrics.get(key + IS_BOUND, 0.0) >= 0.5:
            lines.append(f"{net} vs {b} ({a}): not resolved (a bound, not a measurement{counts})")
            continue
        lines.append(f"{net} vs {b} ({a}): {diff:+.3g} +- {err:.2g} ({verdict(diff, err)}{counts})")
    return lines
