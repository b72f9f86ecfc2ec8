"""Decorrelation of a tagger from a variable (jet mass, pileup mu): 1/JSD at a fixed signal efficiency.

The one implementation of the figure of merit of the adversarial studies (arXiv:1611.01046,
arXiv:1703.03507; definition in ``/work/shared/REFERENCE.md``, "Metrics"): cut the score at the
threshold that keeps ``eff_sig`` of the (weighted) signal, histogram the background's variable
for jets passing and failing the cut, normalise both, and take the Jensen-Shannon divergence
(base 2, :func:`calolab.evaluation.metrics.jsd`); report ``1 / JSD``. Large is decorrelated: a cut
that does not sculpt the background leaves both shapes alike. The evaluation
(:class:`~calolab.evaluation.report.ClassifierEvaluation`, config key ``decorrelation``), the
adversarial task's per-epoch ``val/inv_jsd50``, the registry's decorrelation gate and
``bench/physics_adversarial.py`` all call :func:`inverse_jsd`.

:class:`DecorrelationSpec` is one configured variable (aux branch, scale, binning);
:func:`bootstrap_inverse_jsd` gives Poisson-bootstrap replicas of 1/JSD with the Poisson(1)
draws of :mod:`calolab.evaluation.bootstrap`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from calolab.errors import ConfigError, suggest
from calolab.evaluation.bootstrap import CHUNK, check_replicas, poisson1
from calolab.evaluation.metrics import _TOL, jsd, roc_curve

#: Bins: an integer (equal width over the background's range), a list of edges, or
#: ``{start, stop, step}`` (edges from start to stop, both included).
Bins = int | Sequence[float] | Mapping[str, float]


def resolve_bins(bins: Any, what: str = "bins") -> int | np.ndarray:
    """``bins`` as an integer >= 2 or an increasing edge array; one clear error otherwise."""
    if isinstance(bins, bool):
        raise ConfigError(f"{what} must be an integer >= 2, a list of edges or {{start, stop, step}}, but got {bins!r}")
    if isinstance(bins, int | np.integer):
        if bins < 2:
            raise ConfigError(f"{what} must be >= 2, but got {bins}")
        return int(bins)
    if isinstance(bins, Mapping):
        if set(bins) != {"start", "stop", "step"}:
            raise ConfigError(f"{what} as a mapping takes exactly start, stop, step, but got {sorted(bins)}")
        start, stop, step = (float(bins[k]) for k in ("start", "stop", "step"))
        if not (step > 0 and stop > start):
            raise ConfigError(f"{what}: expected stop > start and step > 0, but got {dict(bins)}")
        n = int(round((stop - start) / step))
        return np.linspace(start, start + n * step, n + 1)
    try:
        edges = np.asarray([float(b) for b in bins])
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"{what} must be an integer >= 2, a list of edges or {{start, stop, step}}, but got {bins!r}"
        ) from err
    if edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ConfigError(f"{what} must be increasing edges (at least two), but got {edges.tolist()}")
    return edges


def _edges(values: np.ndarray, bins: int | np.ndarray) -> np.ndarray:
    return np.histogram_bin_edges(values, bins=bins) if isinstance(bins, int) else np.asarray(bins)


def _bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value; values outside the edges go to the first or last bin (under/overflow)."""
    return np.clip(np.searchsorted(edges, values, side="right") - 1, 0, edges.size - 2)


def cut_at_efficiency(label: np.ndarray, score: np.ndarray, weight: np.ndarray, eff_sig: float) -> np.ndarray:
    """``score >= t`` for the tightest threshold ``t`` keeping at least ``eff_sig`` of the weighted signal."""
    eps_s, _, thresholds = roc_curve(label, score, weight)
    i = min(int(np.searchsorted(eps_s, eff_sig * (1 - _TOL), side="left")), eps_s.size - 1)
    return np.asarray(score) >= thresholds[i]


def background_histograms(
    label: np.ndarray, score: np.ndarray, weight: np.ndarray, values: np.ndarray, eff_sig: float, bins: Bins
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(passing, failing, edges)``: weighted background histograms of ``values`` either side of the cut.

    Values outside explicit edges are counted in the end bins. Raises ConfigError when a
    background value is not finite.
    """
    bins = resolve_bins(bins)
    bkg = np.asarray(label) == 0
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values[bkg])):
        raise ConfigError("the decorrelation variable must be finite for every background event")
    passed = cut_at_efficiency(label, score, weight, eff_sig)
    edges = _edges(values[bkg], bins)
    w = np.asarray(weight, dtype=np.float64)
    idx = _bin_index(values, edges)
    n = edges.size - 1
    p = np.bincount(idx[bkg & passed], w[bkg & passed], minlength=n)
    q = np.bincount(idx[bkg & ~passed], w[bkg & ~passed], minlength=n)
    return p, q, edges


def inverse_jsd(
    label: np.ndarray, score: np.ndarray, weight: np.ndarray, values: np.ndarray, eff_sig: float, bins: Bins
) -> float:
    """1/JSD between the background's ``values`` passing and failing the cut at signal efficiency ``eff_sig``.

    Args:
        label, score, weight: (N,) 0/1 labels, scores (higher = more signal-like), event weights.
        values: (N,) the decorrelation variable (only background entries are used).
        eff_sig: signal efficiency of the cut, e.g. 0.5.
        bins: an integer (equal width over the background's range), a list of edges, or
            ``{start, stop, step}``; values outside explicit edges count in the end bins.

    Returns ``inf`` when the two distributions are identical (e.g. a constant variable). Raises
    ConfigError when the cut leaves no background on one side (the divergence is undefined).
    """
    p, q, _ = background_histograms(label, score, weight, values, eff_sig, bins)
    if not (p.sum() > 0 and q.sum() > 0):
        raise ConfigError(
            f"the cut at eff_sig={eff_sig:g} leaves background weight {p.sum():.4g} passing and "
            f"{q.sum():.4g} failing: the divergence needs both"
        )
    d = jsd(p, q)
    return float("inf") if d == 0 else 1.0 / d


def _jsd_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """JSD (base 2) of each row pair of (R, B) histograms, normalised per row (NaN for an empty row)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        p = p / p.sum(axis=1, keepdims=True)
        q = q / q.sum(axis=1, keepdims=True)
        m = 0.5 * (p + q)
        kl = lambda a: np.where(a > 0, a * np.log2(a / m), 0.0).sum(axis=1)  # noqa: E731
        return np.clip(0.5 * kl(p) + 0.5 * kl(q), 0.0, 1.0)


def bootstrap_inverse_jsd(
    label: np.ndarray,
    score: np.ndarray,
    weight: np.ndarray,
    values: np.ndarray,
    eff_sig: float,
    bins: Bins,
    *,
    replicas: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """(R,) Poisson-bootstrap replicas of :func:`inverse_jsd` (the cut re-found in every replica).

    Each replica re-weights every event by a Poisson(1) draw (:func:`~calolab.evaluation.bootstrap.poisson1`),
    finds the replica's own threshold at ``eff_sig`` and histograms the background either side.
    The binning is the nominal one (edges from the whole background). A replica whose cut leaves
    no background on one side gives NaN; identical shapes give inf.
    """
    check_replicas(replicas)
    y = np.asarray(label).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    bkg = ~y
    edges = _edges(values[bkg], resolve_bins(bins))
    order = np.argsort(-s, kind="stable")  # tightest cut first
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    # ties share the rank of their first member, so that a cut never splits equal scores
    first = np.r_[0, np.flatnonzero(np.diff(s[order]) != 0) + 1]
    rank = np.repeat(first, np.diff(np.r_[first, order.size]))[rank]
    sig_sorted = y[order]
    onehot = np.zeros((int(bkg.sum()), edges.size - 1))
    onehot[np.arange(onehot.shape[0]), _bin_index(values[bkg], edges)] = 1.0
    rank_b = rank[bkg]
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, replicas, CHUNK):
        k = poisson1(rng, (min(CHUNK, replicas - start), y.size)).astype(np.float64) * w  # (C, N)
        ws = k[:, order] * sig_sorted  # (C, N) signal weights, tightest first
        cum = np.cumsum(ws, axis=1)
        total = cum[:, -1:]
        # the event whose cumulative signal weight reaches eff_sig; its whole tie group passes
        pos = np.minimum((cum < eff_sig * (1 - _TOL) * total).sum(axis=1), order.size - 1)  # (C,)
        kb = k[:, bkg]
        passing = rank_b[None, :] <= pos[:, None]  # (C, Nb)
        p = (kb * passing) @ onehot
        q = (kb * ~passing) @ onehot
        d = _jsd_rows(p, q)
        ok = (p.sum(axis=1) > 0) & (q.sum(axis=1) > 0)
        with np.errstate(divide="ignore"):
            out.append(np.where(ok, 1.0 / d, np.nan))
    return np.concatenate(out)


def replica_spread(replicas: np.ndarray) -> float:
    """Half the central 68% interval of bootstrap replicas of 1/JSD (NaN replicas dropped).

    1/JSD is heavy-tailed where the two shapes are nearly equal (a replica with JSD near 0 gives a
    huge 1/JSD), so the standard deviation of the replicas says nothing there; the quantiles do.
    """
    finite = np.asarray(replicas, dtype=np.float64)
    finite = finite[~np.isnan(finite)]
    if finite.size < 2:
        return float("nan")
    lo, hi = np.quantile(finite, [0.16, 0.84])
    return float(0.5 * (hi - lo))


@dataclass(frozen=True)
class DecorrelationSpec:
    """One variable a tagger's decorrelation is measured against (``evaluation.decorrelation.<name>``).

    Attributes:
        name: metric suffix (``test/inv_jsd50_<name>``) and figure name.
        variable: the aux branch.
        label: x-axis label with unit.
        scale: multiplies the values first (e.g. 0.001: MeV -> GeV, so that edges are in GeV).
        bins: as :func:`inverse_jsd` (in the scaled unit).
        eff_sig: signal efficiency of the cut.
    """

    name: str
    variable: str
    label: str
    scale: float = 1.0
    bins: Any = 20
    eff_sig: float = 0.5

    KEYS = ("variable", "label", "scale", "bins", "eff_sig")

    @classmethod
    def from_config(cls, name: str, cfg: Mapping[str, Any]) -> DecorrelationSpec:
        where = f"evaluation.decorrelation.{name}"
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"{where} must be a mapping, but got {cfg!r}")
        unknown = set(cfg) - set(cls.KEYS)
        if unknown or "variable" not in cfg:
            raise ConfigError(f"{where} takes {', '.join(cls.KEYS)} (variable required), but got {sorted(cfg)}")
        eff = float(cfg.get("eff_sig", 0.5))
        if not 0.0 < eff < 1.0:
            raise ConfigError(f"{where}.eff_sig must be in (0, 1), but got eff_sig={eff!r}")
        bins = cfg.get("bins", 20)
        resolve_bins(bins, f"{where}.bins")
        return cls(
            name=name,
            variable=str(cfg["variable"]),
            label=str(cfg.get("label", cfg["variable"])),
            scale=float(cfg.get("scale", 1.0)),
            bins=bins,
            eff_sig=eff,
        )

    @property
    def tag(self) -> str:
        """``50`` for eff_sig = 0.5 (metric names ``inv_jsd50``)."""
        return f"{round(self.eff_sig * 100)}"

    def values(self, aux: Mapping[str, np.ndarray], where: str = "the data") -> np.ndarray:
        """The scaled variable; one clear error naming it and listing the aux branches when it is missing."""
        if self.variable not in aux:
            raise ConfigError(
                f"decorrelation variable {self.variable!r} ({self.name}) is not an aux branch of {where}"
                f"{suggest(self.variable, list(aux))}; aux branches: {', '.join(sorted(aux))}"
            )
        return np.asarray(aux[self.variable], dtype=np.float64) * self.scale


def plot_pass_fail(
    path,
    distributions: Sequence[Mapping[str, Any]],
    *,
    xlabel: str,
    title: str = "",
    n_events: int,
):
    """Normalised background distributions passing and failing the cut, one pair per tagger.

    Args:
        path: the PNG to write.
        distributions: ``{"name", "edges", "passing", "failing", "inv_jsd"}`` per tagger (e.g. this
            net and the lambda = 0 net); solid lines pass, dashed fail.
        xlabel: the variable's label with unit.
        title, n_events: the figure's right-hand label.
    """
    from calolab.evaluation.plots import _figure, _rlabel

    with _figure(path, _rlabel(title, n_events)) as (fig, ax):
        for i, d in enumerate(distributions):
            edges = np.asarray(d["edges"], dtype=np.float64)
            colour = f"C{i}"
            for key, style, word in (("passing", "-", "pass"), ("failing", "--", "fail")):
                h = np.asarray(d[key], dtype=np.float64)
                h = h / h.sum() if h.sum() > 0 else h
                ax.stairs(
                    h, edges, color=colour, linestyle=style, label=f"{d['name']}: {word} (1/JSD = {d['inv_jsd']:.3g})"
                )
        ax.set_xlabel(xlabel)
        ax.set_ylabel("Fraction of background")
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper right", fontsize="small")
    return path


def plot_rejection_vs_inverse_jsd(path, points: Sequence[Mapping[str, Any]], *, title: str = "", n_events: int):
    """R50 against 1/JSD (both log scales), one labelled point with error bars per tagger.

    Args:
        points: ``{"name", "rej50", "rej50_err", "inv_jsd", "inv_jsd_err", "reference"}``; a
            reference point (lambda = 0) is drawn as an open marker.
    """
    from calolab.evaluation.plots import _figure, _rlabel

    with _figure(path, _rlabel(title, n_events)) as (fig, ax):
        for p in points:
            ref = bool(p.get("reference"))
            ax.errorbar(
                p["inv_jsd"],
                p["rej50"],
                xerr=p.get("inv_jsd_err"),
                yerr=p.get("rej50_err"),
                marker="s" if ref else "o",
                mfc="none" if ref else None,
                color="k" if ref else "C0",
                linestyle="none",
            )
            ax.annotate(
                p["name"], (p["inv_jsd"], p["rej50"]), textcoords="offset points", xytext=(5, 5), fontsize="small"
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(r"1/JSD (background, $\varepsilon_S$ = 50%)")
        ax.set_ylabel(r"Background rejection $1/\varepsilon_B$ at $\varepsilon_S$ = 50%")
    return path
