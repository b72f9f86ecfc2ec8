"""Weighted classifier metrics of photon identification and jet tagging, on per-event arrays.

A working point is a cut ``score >= threshold``; signal efficiency eps_S and background
efficiency eps_B are weighted fractions of each class passing it, and the background rejection
is 1/eps_B (R50, R80: at eps_S = 50%, 80%). The ROC curve and the AUC come from scikit-learn's
weighted ``roc_curve`` / ``roc_auc_score`` (torchmetrics' binary ROC takes no event weights); this
module adds the physics read-outs on top of them, the binned efficiencies with weighted binomial
uncertainties, the Jensen-Shannon divergence (base 2) used for decorrelation, and the pixel-by-
pixel correlation of input images with the network output. Weights must be finite and
non-negative and each class must carry positive total weight; bad input raises
:class:`~calolab.errors.ConfigError` saying what was expected and what came.
"""

from __future__ import annotations

import numpy as np
import sklearn.metrics
from scipy.spatial.distance import jensenshannon

from calolab.errors import ConfigError

#: Relative tolerance when comparing cumulative efficiencies with a requested value.
_TOL = 1e-9


def _event_arrays(
    label: np.ndarray, score: np.ndarray, weight: np.ndarray | None, *, score_name: str = "score"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check and return ``(label as bool, score as float64, weight as float64)``, all (N,)."""
    y = np.asarray(label)
    s = np.asarray(score)
    if y.ndim != 1 or s.shape != y.shape:
        raise ConfigError(
            f"label and {score_name} must be 1-d arrays of one length, but got shapes {y.shape} and {s.shape}"
        )
    if y.size == 0:
        raise ConfigError("expected at least one event, but got empty arrays")
    if not np.all((y == 0) | (y == 1)):
        raise ConfigError(f"label must hold only 0 (background) and 1 (signal), but got values {np.unique(y)[:10]}")
    y = y.astype(bool)
    s = s.astype(np.float64)
    if not np.all(np.isfinite(s)):
        raise ConfigError(f"{score_name} must be finite, but got {int(np.sum(~np.isfinite(s)))} NaN or inf values")
    if weight is None:
        w = np.ones_like(s)
    else:
        w = np.asarray(weight, dtype=np.float64)
        if w.shape != y.shape:
            raise ConfigError(f"weight must have the shape of label {y.shape}, but got {w.shape}")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ConfigError(
                f"weights must be finite and >= 0, but got min={np.nanmin(w)!r} with {int(np.sum(~np.isfinite(w)))} non-finite"
            )
    w_sig, w_bkg = w[y].sum(), w[~y].sum()
    if not (w_sig > 0 and w_bkg > 0):
        raise ConfigError(
            f"expected signal and background events with positive total weight, but got "
            f"{int(y.sum())} signal (weight {w_sig:g}) and {int((~y).sum())} background (weight {w_bkg:g})"
        )
    return y, s, w


def roc_curve(
    label: np.ndarray, score: np.ndarray, weight: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted ROC curve, from the tightest cut to the loosest.

    Returns:
        ``(eff_sig, eff_bkg, thresholds)``: eps_S and eps_B of the cut ``score >= thresholds[i]``,
        both non-decreasing; every distinct score is a threshold (nothing dropped), and
        ``thresholds[0] = inf`` is the cut that nothing passes.
    """
    y, s, w = _event_arrays(label, score, weight)
    eff_bkg, eff_sig, thresholds = sklearn.metrics.roc_curve(y, s, sample_weight=w, drop_intermediate=False)
    return eff_sig, eff_bkg, thresholds


def auc(label: np.ndarray, score: np.ndarray, weight: np.ndarray | None = None) -> float:
    """Weighted area under the ROC curve: the probability that signal scores above background."""
    y, s, w = _event_arrays(label, score, weight)
    return float(sklearn.metrics.roc_auc_score(y, s, sample_weight=w))


def _max_rejection(y: np.ndarray, w: np.ndarray) -> float:
    """The largest rejection the sample resolves: 1 / (lightest background event's weight fraction)."""
    wb = w[~y]
    return float(wb.sum() / wb[wb > 0].min())


def _check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"{name} must be in (0, 1], but got {name}={value!r}")
    return value


def rejection_at_efficiency(
    label: np.ndarray, score: np.ndarray, eff_sig: float, weight: np.ndarray | None = None
) -> float:
    """Background rejection 1/eps_B of the tightest cut whose signal efficiency reaches ``eff_sig``.

    No interpolation: the working point is a real cut on the score, so eps_S may exceed
    ``eff_sig`` by up to one event's weight. When no background passes that cut (eps_B = 0) the
    rejection is unmeasurable on this sample and the finite bound
    ``sum(background weights) / min(positive background weight)`` is returned instead: the
    rejection had the lightest background event passed, the largest this sample can resolve.
    """
    eps_b = background_efficiency_at(label, score, eff_sig, weight)
    if eps_b > 0:
        return 1.0 / eps_b
    y, _, w = _event_arrays(label, score, weight)
    return _max_rejection(y, w)


def background_efficiency_at(
    label: np.ndarray, score: np.ndarray, eff_sig: float, weight: np.ndarray | None = None
) -> float:
    """eps_B of the tightest cut whose signal efficiency reaches ``eff_sig`` (0 when no background passes)."""
    eff_sig = _check_fraction("eff_sig", eff_sig)
    y, s, w = _event_arrays(label, score, weight)
    eps_s, eps_b, _ = roc_curve(y, s, w)
    i = min(int(np.searchsorted(eps_s, eff_sig * (1 - _TOL), side="left")), eps_s.size - 1)
    return float(eps_b[i])


def efficiency_at_rejection(
    label: np.ndarray, score: np.ndarray, rejection: float, weight: np.ndarray | None = None
) -> tuple[float, float]:
    """Signal efficiency of the loosest cut whose background rejection is at least ``rejection``.

    The inverse of :func:`rejection_at_efficiency` up to one event's weight: the cut found keeps
    eps_B <= 1/rejection, so it never rejects less background than asked for.

    Returns:
        ``(eff_sig, threshold)``; the cut is ``score >= threshold`` (``inf`` when only the empty
        selection is tight enough).
    """
    rejection = float(rejection)
    if not rejection >= 1.0:
        raise ConfigError(f"rejection must be >= 1 (it is 1/eps_B), but got rejection={rejection!r}")
    y, s, w = _event_arrays(label, score, weight)
    eps_s, eps_b, thresholds = roc_curve(y, s, w)
    j = int(np.searchsorted(eps_b, (1.0 / rejection) * (1 + _TOL), side="right")) - 1
    return float(eps_s[j]), float(thresholds[j])


def _weighted_binomial(w_pass: np.ndarray, w2_pass: np.ndarray, w_all: np.ndarray, w2_all: np.ndarray):
    """Efficiency and its weighted binomial uncertainty per bin (ROOT ``TH1::Divide(..., "B")``).

    var = ((1 - 2 eps) sum_pass w^2 + eps^2 sum_all w^2) / (sum_all w)^2, which is eps (1 - eps) / N
    for unit weights. Empty bins give NaN.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        eff = np.where(w_all > 0, w_pass / np.where(w_all > 0, w_all, 1.0), np.nan)
        var = ((1 - 2 * eff) * w2_pass + eff**2 * w2_all) / np.where(w_all > 0, w_all, np.nan) ** 2
    return eff, np.sqrt(np.clip(var, 0.0, None))


def binned_efficiency(
    label: np.ndarray,
    passed: np.ndarray,
    values: np.ndarray,
    edges: np.ndarray,
    weight: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Signal and background efficiency of a selection in bins of ``values``.

    Bins are ``[edges[i], edges[i+1])``, the last one closed like ``np.histogram``; events outside
    the edges are left out.

    Returns:
        arrays per bin: ``edges`` (n+1), ``sig_eff``, ``sig_err``, ``bkg_eff``, ``bkg_err`` (weighted
        binomial uncertainties, NaN for an empty bin), ``sig_weight``, ``bkg_weight`` (sum of
        weights), ``n_sig``, ``n_bkg`` (event counts).
    """
    passed = np.asarray(passed)
    if passed.dtype != bool:
        raise ConfigError(f"passed must be a boolean array, but got dtype {passed.dtype}")
    y, x, w = _event_arrays(label, values, weight, score_name="values")
    if passed.shape != y.shape:
        raise ConfigError(f"passed must have the shape of label {y.shape}, but got {passed.shape}")
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.diff(edges) > 0):
        raise ConfigError(f"edges must be a strictly increasing 1-d array of >= 2 values, but got {edges!r}")
    n_bins = edges.size - 1
    idx = np.searchsorted(edges, x, side="right") - 1
    idx[x == edges[-1]] = n_bins - 1
    inside = (idx >= 0) & (idx < n_bins)
    out: dict[str, np.ndarray] = {"edges": edges}
    for cls, mask in (("sig", y & inside), ("bkg", ~y & inside)):
        i, wi, pi = idx[mask], w[mask], passed[mask]

        def sums(v: np.ndarray, i=i) -> np.ndarray:
            return np.bincount(i, weights=v, minlength=n_bins)

        eff, err = _weighted_binomial(sums(wi * pi), sums(wi**2 * pi), sums(wi), sums(wi**2))
        out[f"{cls}_eff"], out[f"{cls}_err"] = eff, err
        out[f"{cls}_weight"] = sums(wi)
        out[f"n_{cls}"] = np.bincount(i, minlength=n_bins)
    return out


def jsd(p_hist: np.ndarray, q_hist: np.ndarray) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) between two histograms, each normalised first.

    Identical shapes give 0, shapes with no bin in common give 1. The decorrelation figure of
    merit is 1/JSD between background passing and failing a cut.
    """
    p = np.asarray(p_hist, dtype=np.float64)
    q = np.asarray(q_hist, dtype=np.float64)
    if p.shape != q.shape or p.size == 0:
        raise ConfigError(f"histograms must have one non-empty shape, but got {p.shape} and {q.shape}")
    for name, h in (("p_hist", p), ("q_hist", q)):
        if not np.all(np.isfinite(h)) or np.any(h < 0) or not h.sum() > 0:
            raise ConfigError(f"{name} must be finite, >= 0 and not all zero, but got sum={h.sum()!r}, min={h.min()!r}")
    # scipy returns the Jensen-Shannon *distance*, the square root of the divergence.
    return float(np.clip(jensenshannon(p.ravel(), q.ravel(), base=2) ** 2, 0.0, 1.0))


def pixel_score_correlation(images: np.ndarray, score: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Pearson correlation of every pixel with the network output, over events.

    Vectorised over pixels and computed in two passes over chunks of events (means, then centred
    sums) so that large test sets never need a float64 copy of all images at once. A pixel that is
    constant over the events has no defined correlation and gets NaN.

    Args:
        images: (N, H, W) or (N, 1, H, W) images of one layer, axes (eta, phi).
        score: (N,) network outputs.

    Returns:
        (H, W) correlations in [-1, 1].
    """
    x = np.asarray(images)
    s = np.asarray(score, dtype=np.float64)
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]  # (N, eta, phi)
    if x.ndim != 3 or s.ndim != 1 or x.shape[0] != s.shape[0]:
        raise ConfigError(
            f"expected images (N, H, W) or (N, 1, H, W) and score (N,), but got {np.shape(images)} and {s.shape}"
        )
    n, h, wd = x.shape
    if n < 2:
        raise ConfigError(f"a correlation needs at least 2 events, but got {n}")
    flat = x.reshape(n, h * wd)  # (N, P)
    mean = np.zeros(h * wd)
    for a in range(0, n, chunk):
        mean += flat[a : a + chunk].sum(axis=0, dtype=np.float64)
    mean /= n
    sc = s - s.mean()
    sxy = np.zeros(h * wd)
    sxx = np.zeros(h * wd)
    for a in range(0, n, chunk):
        xc = flat[a : a + chunk].astype(np.float64) - mean  # (chunk, P)
        sxy += sc[a : a + chunk] @ xc
        sxx += np.einsum("ij,ij->j", xc, xc)
    den = np.sqrt(sxx * (sc @ sc))
    corr = np.full(h * wd, np.nan)
    np.divide(sxy, den, out=corr, where=den > 0)
    return np.clip(corr, -1.0, 1.0).reshape(h, wd)
