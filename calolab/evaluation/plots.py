"""The evaluation's PNG figures, drawn in mplhep's ATLAS style with a "calolab Simulation" label.

Each function draws one figure from numbers already computed (ROC curves, binned efficiencies,
score histograms, pixel-correlation maps) and writes it to ``path``. Figures are built as
``matplotlib.figure.Figure`` objects on an explicit Agg canvas, never through pyplot: no display
or global backend is touched, nothing is left open, and the style is applied only inside
``matplotlib.style.context`` so the caller's rcParams are unchanged. The label's right-hand text
names the sample (``title``) and the number of test events.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib.colors
import matplotlib.style
import mplhep
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter

from calolab.errors import InputFileError

#: Curves with more points than this are thinned for drawing (the metrics use every point).
MAX_CURVE_POINTS = 4000


@contextmanager
def _figure(
    path: Path,
    rlabel: str,
    nrows: int = 1,
    ncols: int = 1,
    figsize: tuple[float, float] | None = None,
    **subplots,
) -> Iterator[tuple[Figure, Axes | np.ndarray]]:
    """Yield a styled, labelled figure and its axes, then write the PNG.

    The label goes on the first axes before anything is drawn: mplhep renders the figure to
    place it, which is cheap on empty axes and costs a full extra render on a finished plot.
    Callers must not resize the axes afterwards (pre-allocate colour-bar axes instead).
    """
    with matplotlib.style.context(mplhep.style.ATLAS):
        fig = Figure(figsize=figsize)
        FigureCanvasAgg(fig)
        axes = fig.subplots(nrows, ncols, squeeze=True, **subplots)
        first = axes if isinstance(axes, Axes) else axes.flat[0]
        mplhep.atlas.label(ax=first, exp="calolab", data=False, loc=0, rlabel=rlabel, scilocator_adjust=False)
        yield fig, axes
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, format="png")
        except OSError as err:
            raise InputFileError(f"cannot write figure {path}: {err}") from err


def _rlabel(title: str, n_events: int) -> str:
    return f"{title + ', ' if title else ''}{n_events:,} test events"


def _thin(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    n = len(arrays[0])
    if n <= MAX_CURVE_POINTS:
        return arrays
    keep = np.unique(np.linspace(0, n - 1, MAX_CURVE_POINTS).astype(np.int64))
    return tuple(a[keep] for a in arrays)


def plot_roc(
    path: Path,
    curves: Sequence[Mapping],
    points: Sequence[Mapping] = (),
    *,
    title: str = "",
    n_events: int,
) -> Path:
    """Background rejection 1/eps_B (log) against signal efficiency.

    Args:
        curves: ``{"name", "eff_sig", "eff_bkg", "auc"}`` per classifier (from ``roc_curve``),
            optionally ``"band": {"eff_sig", "lo", "hi"}``: the rejection's 68% band (bootstrap
            replicas), drawn shaded in the curve's colour (an infinite upper end: to the top), and
            ``"auc_err"`` shown in the legend.
        points: ``{"name", "eff_sig", "rejection"}`` per cut-based working point (a marker), with
            ``"bound": True`` when the rejection is a lower bound (drawn as an upward triangle).
    """
    with _figure(path, _rlabel(title, n_events)) as (_, ax):
        top = 1.0
        for curve in curves:
            es, eb = np.asarray(curve["eff_sig"]), np.asarray(curve["eff_bkg"])
            ok = eb > 0
            es, eb = _thin(es[ok], eb[ok])
            err = curve.get("auc_err")
            auc_text = f"{curve['auc']:.3f}" + (f" $\\pm$ {err:.3f}" if err is not None and np.isfinite(err) else "")
            (line,) = ax.plot(es, 1.0 / eb, label=f"{curve['name']} (AUC = {auc_text})")
            top = max(top, float(np.max(1.0 / eb, initial=1.0)))
            band = curve.get("band")
            if band is not None:
                bx = np.asarray(band.get("eff_sig"), dtype=np.float64)
                lo = np.asarray([np.nan if v is None else v for v in band["lo"]], dtype=np.float64)
                hi = np.asarray([np.inf if v is None else v for v in band["hi"]], dtype=np.float64)
                keep = np.isfinite(lo)
                hi = np.where(np.isfinite(hi), hi, top * 10)
                ax.fill_between(bx[keep], lo[keep], hi[keep], color=line.get_color(), alpha=0.25, lw=0)
        grid = np.linspace(0.01, 1.0, 200)
        ax.plot(grid, 1.0 / grid, ls=":", color="grey", label="Random (AUC = 0.5)")
        for point in points:
            top = max(top, float(point["rejection"]))
            if point.get("bound"):  # no background passes: the rejection is only bounded from below
                ax.plot(
                    [point["eff_sig"]],
                    [point["rejection"]],
                    ls="none",
                    marker="^",
                    ms=12,
                    label=f"{point['name']} (lower bound)",
                )
            else:
                ax.plot([point["eff_sig"]], [point["rejection"]], ls="none", marker="*", ms=16, label=point["name"])
        ax.set_yscale("log")
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(bottom=1.0, top=top * 3)
        ax.set_xlabel(r"Signal efficiency $\varepsilon_S$")
        ax.set_ylabel(r"Background rejection $1/\varepsilon_B$")
        ax.legend(loc="upper right")
    return Path(path)


def plot_binned_efficiency(
    path: Path,
    tables: Mapping[str, Mapping[str, np.ndarray]],
    *,
    xlabel: str,
    title: str = "",
    n_events: int,
) -> Path:
    """Signal (top) and background (bottom) efficiency in bins, one series per working point.

    Args:
        tables: working-point name -> the output of :func:`~calolab.evaluation.metrics.binned_efficiency`.
        xlabel: the binned quantity with its unit, e.g. ``r"$p_T$ [GeV]"``.
    """
    with _figure(path, _rlabel(title, n_events), nrows=2, figsize=(8.0, 8.0), sharex=True) as (_, (ax_s, ax_b)):
        markers = iter(("o", "s", "^", "v", "D"))
        lo, hi = [], []
        for name, tab in tables.items():
            edges = np.asarray(tab["edges"], dtype=np.float64)
            centre, half = 0.5 * (edges[1:] + edges[:-1]), 0.5 * np.diff(edges)
            kw = {"ls": "none", "marker": next(markers, "o"), "capsize": 0}
            sig_eff, sig_err = np.asarray(tab["sig_eff"], np.float64), np.asarray(tab["sig_err"], np.float64)
            ax_s.errorbar(centre, sig_eff, yerr=sig_err, xerr=half, label=name, **kw)
            ax_b.errorbar(centre, tab["bkg_eff"], yerr=tab["bkg_err"], xerr=half, **kw)
            lo.append(np.nanmin(sig_eff - sig_err, initial=np.inf))
            hi.append(np.nanmax(sig_eff + sig_err, initial=-np.inf))
        if np.isfinite(min(lo, default=np.inf)) and np.isfinite(max(hi, default=-np.inf)):
            span = max(max(hi) - min(lo), 0.02)  # leave the lower part of the panel to the legend
            ax_s.set_ylim(min(lo) - 0.25 * len(tables) * span, max(hi) + 0.1 * span)
        ax_s.set_ylabel(r"Signal efficiency $\varepsilon_S$")
        ax_b.set_ylabel(r"Background efficiency $\varepsilon_B$")
        ax_b.set_xlabel(xlabel)
        ax_s.legend(loc="lower left")
    return Path(path)


def plot_score(
    path: Path,
    label: np.ndarray,
    score: np.ndarray,
    weight: np.ndarray,
    *,
    xlabel: str = "Network output",
    title: str = "",
    bins: int = 50,
    class_names: tuple[str, str] = ("Signal", "Background"),
) -> Path:
    """Weighted score distributions of signal and background, each normalised to unit area."""
    label = np.asarray(label).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    lo, hi = float(score.min()), float(score.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    with _figure(path, _rlabel(title, len(score))) as (_, ax):
        for mask, name in zip((label, ~label), class_names, strict=True):
            h, _ = np.histogram(score[mask], edges, weights=weight[mask])
            h2, _ = np.histogram(score[mask], edges, weights=weight[mask] ** 2)
            norm = weight[mask].sum() * np.diff(edges)
            mplhep.histplot(h / norm, edges, yerr=np.sqrt(h2) / norm, ax=ax, label=name, histtype="step")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("Normalised density (weighted)")
        ax.legend(loc="upper center")
    return Path(path)


def plot_correlation_map(path: Path, corr: np.ndarray, layer: str, *, title: str = "", n_events: int) -> Path:
    """Heat map of the per-pixel Pearson correlation with the network output, (eta x phi) cells.

    A diverging colour map centred at 0; pixels without a defined correlation (constant) are grey.
    """
    corr = np.asarray(corr, dtype=np.float64)  # (eta, phi)
    finite = corr[np.isfinite(corr)]
    vmax = max(float(np.abs(finite).max()) if finite.size else 1.0, 1e-3)
    rlabel = _rlabel(f"{title + ' ' if title else ''}{layer}", n_events)
    grid = {"width_ratios": (20, 1), "wspace": 0.05, "right": 0.86}  # room for the colour-bar label
    with _figure(path, rlabel, ncols=2, gridspec_kw=grid) as (fig, (ax, cax)):
        cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="lightgrey")
        n_eta, n_phi = corr.shape
        mesh = ax.pcolormesh(
            np.arange(n_eta + 1), np.arange(n_phi + 1), np.ma.masked_invalid(corr.T), cmap=cmap, vmin=-vmax, vmax=vmax
        )
        ax.set_xlim(0, n_eta)
        ax.set_ylim(0, n_phi)
        bar = fig.colorbar(mesh, cax=cax, format=FormatStrFormatter("%.2g"))
        bar.set_label("Pearson correlation with output")
        ax.set_xlabel(rf"{layer} $\eta$ cell index")
        ax.set_ylabel(rf"{layer} $\phi$ cell index")
    return Path(path)


def plot_average_images(
    path: Path,
    signal: np.ndarray,
    background: np.ndarray,
    name: str,
    *,
    class_names: tuple[str, str] = ("Signal", "Background"),
    title: str = "",
    n_events: int,
) -> Path:
    """Average signal image, average background image and their difference, side by side, (eta x phi).

    Non-negative averages (pT or counts) share one logarithmic colour scale (jet images span orders
    of magnitude); averages with negative pixels (standardised inputs) share a linear diverging
    one. The difference has a diverging scale centred at 0. The title goes in the figure's top
    line (``title``, the input ``name``, the event count); each panel says what it shows.
    """
    sig = np.asarray(signal, dtype=np.float64)  # (eta, phi)
    bkg = np.asarray(background, dtype=np.float64)
    diff = sig - bkg
    both = np.concatenate([sig.ravel(), bkg.ravel()])
    positive = both[both > 0]
    grid = {"width_ratios": (20, 20, 20, 1), "wspace": 0.25, "right": 0.9, "top": 0.85}
    with _figure(path, _rlabel("", n_events), ncols=4, figsize=(18.0, 6.5), gridspec_kw=grid) as (fig, axes):
        fig.suptitle(f"{title + ': ' if title else ''}{name}", fontsize="medium", x=0.5, y=0.97)
        n_eta, n_phi = sig.shape
        xs, ys = np.arange(n_eta + 1), np.arange(n_phi + 1)
        if both.min() < 0:  # standardised inputs: zero-centred, so linear and diverging
            vmax = max(float(np.abs(both).max()), 1e-12)
            shown = {"norm": matplotlib.colors.Normalize(vmin=-vmax, vmax=vmax), "cmap": "RdBu_r"}
            images = (sig.T, bkg.T)
        else:
            norm = (
                matplotlib.colors.LogNorm(vmin=max(positive.min(), positive.max() * 1e-6), vmax=positive.max())
                if positive.size
                else None
            )
            shown = {"norm": norm, "cmap": "viridis"}
            images = (np.ma.masked_less_equal(sig.T, 0), np.ma.masked_less_equal(bkg.T, 0))
        for ax, image, label in zip(axes[:2], images, class_names, strict=True):
            ax.pcolormesh(xs, ys, image, **shown)
            ax.text(0.04, 0.04, f"{label} (average)", transform=ax.transAxes, fontsize="small")
        vmax = max(float(np.abs(diff).max()), 1e-12)
        mesh = axes[2].pcolormesh(xs, ys, diff.T, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        axes[2].text(0.04, 0.04, f"{class_names[0]} - {class_names[1]}", transform=axes[2].transAxes, fontsize="small")
        for ax in axes[:3]:
            ax.set_xlim(0, n_eta)
            ax.set_ylim(0, n_phi)
        for ax in axes[:3]:
            ax.set_xlabel(r"$\eta$ pixel")
        axes[0].set_ylabel(r"$\phi$ pixel")
        fig.colorbar(mesh, cax=axes[3], format=FormatStrFormatter("%.2g"))
    return Path(path)
