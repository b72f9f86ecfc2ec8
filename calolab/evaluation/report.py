"""The photon-ID evaluation of a trained classifier on the test split, in one call.

:func:`evaluate_classifier` compares, on the same test events, the network's score with two
physics baselines fitted on the *training* split only (a tight-like cut-based working point and a
BDT on shower shapes), computes the ``test/...`` metrics, writes the PNG figures (ROC, efficiency
versus pT, |eta| and pileup, score distributions, pixel-output correlation maps) and returns the
numbers behind them as JSON-able tables. The training command calls it after testing; a jet
tagger whose aux branches hold no shower shapes gets the baseline-free part (AUC, R50, R80, score
and correlation plots, efficiencies at its own 50% working point).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calolab.errors import ConfigError, InputFileError
from calolab.evaluation import plots
from calolab.evaluation.baselines import SHOWER_SHAPES, CutBasedTight, ShowerShapeBDT
from calolab.evaluation.metrics import (
    _event_arrays,
    _max_rejection,
    auc,
    binned_efficiency,
    efficiency_at_rejection,
    pixel_score_correlation,
    rejection_at_efficiency,
    roc_curve,
)

log = logging.getLogger(__name__)

#: |eta| bin edges of ATLAS photon ID (barrel 0-1.37, crack 1.37-1.52, end-cap to 2.37).
ETA_EDGES = (0.0, 0.6, 0.8, 1.15, 1.37, 1.52, 1.81, 2.01, 2.37)
#: Bins of equal test population for continuous quantities (pT, many-valued mu).
N_QUANTILE_BINS = 8
#: A quantity with at most this many distinct values gets one bin per value (e.g. mu = 0, 50).
MAX_DISCRETE_VALUES = 12
#: Aux branches the efficiencies are binned in (pT in MeV).
BINNED_BRANCHES = ("ph_pt", "ph_eta", "mu")
#: Name of the JSON file holding ``metrics`` and ``tables`` in ``out_dir``.
SUMMARY_FILE = "evaluation.json"


@dataclass
class EvaluationResult:
    """What :func:`evaluate_classifier` produced.

    Attributes:
        metrics: ``test/<name>`` -> value, ready to log.
        figures: figure name (``roc``, ``eff_vs_pt``, ...) -> PNG path.
        tables: JSON-able numbers behind the figures (``binned``, ``baseline``, ``correlation``,
            ``skipped``: figure or metric -> why it was not made).
    """

    metrics: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)


def _split(split: Mapping, name: str) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``(label, weight, aux)`` of a split dict; a missing weight means unit weights."""
    if not isinstance(split, Mapping) or "label" not in split:
        raise ConfigError(
            f"{name} must be a dict with 'label', 'weight' and 'aux', but got {type(split).__name__} with keys {sorted(split) if isinstance(split, Mapping) else '-'}"
        )
    label = np.asarray(split["label"])
    weight = np.ones(label.shape) if split.get("weight") is None else np.asarray(split["weight"], dtype=np.float64)
    aux = dict(split.get("aux") or {})
    for key in (*SHOWER_SHAPES, *BINNED_BRANCHES):  # the branches read here; others may be anything
        if key in aux and np.shape(aux[key]) != label.shape:
            raise ConfigError(
                f"{name} aux branch {key!r}: expected shape {label.shape} like the labels, but got {np.shape(aux[key])}"
            )
    return label, weight, aux


def _shapes_available(train_aux: Mapping, test_aux: Mapping) -> bool:
    """True when both splits hold every shower shape, False when neither holds any; else an error."""
    have = {name: [v for v in SHOWER_SHAPES if v in aux] for name, aux in (("train", train_aux), ("test", test_aux))}
    if all(len(v) == len(SHOWER_SHAPES) for v in have.values()):
        return True
    if not any(have.values()):
        return False
    missing = {name: sorted(set(SHOWER_SHAPES) - set(v)) for name, v in have.items()}
    raise ConfigError(
        f"the baselines need all shower shapes {list(SHOWER_SHAPES)} in train and test aux, but these are missing: {missing}"
    )


def _quantile_edges(x: np.ndarray, n_bins: int) -> np.ndarray:
    q = np.quantile(x, np.linspace(0.0, 1.0, n_bins + 1))
    if q[-1] - q[0] > 20:  # round inner edges to whole units for readable bins
        q[1:-1] = np.round(q[1:-1])
    q[0], q[-1] = math.floor(q[0]), math.ceil(q[-1])
    edges = np.unique(q)
    return edges if edges.size >= 2 else np.array([edges[0] - 0.5, edges[0] + 0.5])


def _discrete_or_quantile_edges(x: np.ndarray) -> np.ndarray:
    values = np.unique(x)
    if values.size > MAX_DISCRETE_VALUES:
        return _quantile_edges(x, N_QUANTILE_BINS)
    step = float(np.diff(values).min()) if values.size > 1 else 1.0
    mids = 0.5 * (values[1:] + values[:-1])
    return np.concatenate([[values[0] - step / 2], mids, [values[-1] + step / 2]])


def _eta_edges(abs_eta: np.ndarray) -> np.ndarray:
    top = float(abs_eta.max())
    edges = [e for e in ETA_EDGES if e <= 1.37 or e < top]
    if top >= edges[-1]:
        nxt = [e for e in ETA_EDGES if e > edges[-1]]
        edges.append(nxt[0] if nxt else math.nextafter(top, math.inf))
    return np.asarray(edges)


def _jsonable(obj: Any) -> Any:
    """Arrays to lists, numpy scalars to Python, NaN and inf to None (strict JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _weighted_eff(passed: np.ndarray, mask: np.ndarray, weight: np.ndarray) -> float:
    return float(weight[mask & passed].sum() / weight[mask].sum())


def evaluate_classifier(
    *,
    score: np.ndarray,
    test: dict,
    train: dict,
    out_dir: Path,
    title: str = "",
    inputs_for_maps: dict[str, np.ndarray] | None = None,
) -> EvaluationResult:
    """Evaluate a classifier's test scores against cut-based and BDT baselines fitted on train.

    Args:
        score: (N_test,) classifier output on the test events (higher = more signal-like).
        test: ``{"label": (N,), "weight": (N,), "aux": {branch: (N,)}}`` of the test split; the
            shower shapes, ``ph_pt`` (MeV), ``ph_eta`` and ``mu`` are read from ``aux``.
        train: the same for the training split; used *only* to fit the baselines.
        out_dir: where the PNGs and ``evaluation.json`` (metrics and tables) are written.
        title: sample or run name shown on every figure.
        inputs_for_maps: layer name -> (N_test, 1, H, W) test images; one correlation map each.

    Returns:
        The metrics, figure paths and tables. Always: ``test/auc``, ``test/rej50``, ``test/rej80``,
        ``test/n_events``, ``test/n_signal``, ``test/n_background``. With shower shapes in both
        splits also ``test/baseline_eff``, ``test/baseline_rej`` (the cut-based working point on
        test), ``test/eff_at_baseline_rej`` (the classifier's signal efficiency at that
        rejection), ``test/rel_eff_gain_at_baseline_rej`` (its ratio to ``baseline_eff`` minus 1),
        ``test/bdt_auc``, ``test/bdt_rej50``, ``test/bdt_rej80``, ``test/bdt_eff_at_baseline_rej``.
        Without shower shapes (e.g. a jet tagger) those are left out and the binned efficiencies
        are those of the classifier's own 50%-efficiency cut. ``eff_vs_pt``, ``eff_vs_eta`` and
        ``eff_vs_mu`` need ``ph_pt``, ``ph_eta`` and ``mu`` in the test aux; ``eff_vs_mu`` is also
        skipped when mu is constant (one pileup condition has no dependence to show). Skipped
        items and the reasons are listed in ``tables["skipped"]``.
    """
    out_dir = Path(out_dir)
    y_test, w_test, aux_test = _split(test, "test")
    y_train, w_train, aux_train = _split(train, "train")
    y, s, w = _event_arrays(y_test, score, w_test)
    for layer, images in (inputs_for_maps or {}).items():  # fail before the expensive part
        if np.ndim(images) not in (3, 4) or np.shape(images)[0] != y.size:
            raise ConfigError(
                f"inputs_for_maps[{layer!r}]: expected ({y.size}, 1, H, W) test images, but got shape {np.shape(images)}"
            )
    with_baselines = _shapes_available(aux_train, aux_test)
    sig, n = y, int(y.size)
    result = EvaluationResult()
    m, tables, skipped = result.metrics, result.tables, {}
    tables["skipped"] = skipped

    m["test/n_events"] = float(n)
    m["test/n_signal"] = float(sig.sum())
    m["test/n_background"] = float((~sig).sum())
    # the statistical power of a weighted background: rejections far above it are not resolved
    wb = w[~sig]
    m["test/n_background_eff"] = float(wb.sum() ** 2 / (wb**2).sum()) if wb.size and (wb**2).sum() > 0 else 0.0
    m["test/auc"] = auc(y, s, w)
    m["test/rej50"] = rejection_at_efficiency(y, s, 0.5, w)
    m["test/rej80"] = rejection_at_efficiency(y, s, 0.8, w)
    eff_s, eff_b, _ = roc_curve(y, s, w)
    curves = [{"name": "Network", "eff_sig": eff_s, "eff_bkg": eff_b, "auc": m["test/auc"]}]
    roc_points = []

    if with_baselines:
        cut = CutBasedTight().fit(aux_train, y_train, w_train)
        base_pass = cut.passes(aux_test)
        base_eff = _weighted_eff(base_pass, sig, w)
        base_eb = _weighted_eff(base_pass, ~sig, w)
        base_rej = 1.0 / base_eb if base_eb > 0 else _max_rejection(y, w)
        cnn_eff, cnn_thr = efficiency_at_rejection(y, s, base_rej, w)
        m["test/baseline_eff"], m["test/baseline_rej"] = base_eff, base_rej
        m["test/eff_at_baseline_rej"] = cnn_eff
        if base_eff > 0:  # left out when the cuts keep no test signal (no ratio to take)
            m["test/rel_eff_gain_at_baseline_rej"] = cnn_eff / base_eff - 1.0
        tables["baseline"] = {
            "cuts": {k: list(v) for k, v in cut.cuts.items()},
            "target_efficiency": cut.target_efficiency,
            "train_eff": cut.train_efficiency,
            "train_bkg_eff": cut.train_background_efficiency,
            "classifier_threshold_at_baseline_rej": cnn_thr,
        }
        bdt = ShowerShapeBDT().fit(aux_train, y_train, w_train)
        b = bdt.score(aux_test)
        m["test/bdt_auc"] = auc(y, b, w)
        m["test/bdt_rej50"] = rejection_at_efficiency(y, b, 0.5, w)
        m["test/bdt_rej80"] = rejection_at_efficiency(y, b, 0.8, w)
        m["test/bdt_eff_at_baseline_rej"] = efficiency_at_rejection(y, b, base_rej, w)[0]
        tables["baseline"]["bdt_iterations"] = int(bdt.model.n_iter_)
        bs, bb, _ = roc_curve(y, b, w)
        curves.append({"name": "Shower-shape BDT", "eff_sig": bs, "eff_bkg": bb, "auc": m["test/bdt_auc"]})
        roc_points.append({"name": "Cut-based tight-like", "eff_sig": base_eff, "rejection": base_rej})
        working_points = {
            "classifier": ("Network at cut-based $1/\\varepsilon_B$", s >= cnn_thr),
            "cut_based": ("Cut-based tight-like", base_pass),
        }
    else:
        reason = f"no shower shapes {list(SHOWER_SHAPES)} in the aux branches"
        log.info("evaluation: baselines skipped: %s", reason)
        skipped["baselines"] = reason
        _, thr50 = efficiency_at_rejection(y, s, m["test/rej50"], w)
        working_points = {"classifier": (r"Network at $\varepsilon_S$ = 50%", s >= thr50)}

    fig = result.figures
    fig["roc"] = plots.plot_roc(out_dir / "roc.png", curves, roc_points, title=title, n_events=n)
    names = ("Prompt photons", "Jets") if with_baselines else ("Signal", "Background")
    fig["score"] = plots.plot_score(out_dir / "score.png", y, s, w, title=title, class_names=names)

    binned: dict[str, Any] = {}
    specs = (
        ("pt", "ph_pt", r"Photon $p_T$ [GeV]", lambda v: v / 1000.0, lambda v: _quantile_edges(v, N_QUANTILE_BINS)),
        ("eta", "ph_eta", r"Photon $|\eta|$", np.abs, _eta_edges),
        ("mu", "mu", r"Pileup $\mu$", lambda v: v, _discrete_or_quantile_edges),
    )
    for key, branch, xlabel, transform, make_edges in specs:
        if branch not in aux_test:
            skipped[f"eff_vs_{key}"] = f"no {branch!r} in the test aux branches"
            continue
        values = transform(np.asarray(aux_test[branch], dtype=np.float64))
        if not np.all(np.isfinite(values)):
            raise ConfigError(f"test aux branch {branch!r}: expected finite values to bin in, but got NaN or inf")
        if key == "mu" and np.ptp(values) == 0:
            skipped["eff_vs_mu"] = f"mu is constant ({values[0]:g}) in the test sample"
            continue
        edges = make_edges(values)
        tabs = {wp: binned_efficiency(y, passed, values, edges, w) for wp, (_, passed) in working_points.items()}
        binned[key] = {
            "variable": branch,
            "xlabel": xlabel,
            "working_points": {wp: {"label": working_points[wp][0], **tab} for wp, tab in tabs.items()},
        }
        shown = {working_points[wp][0]: tab for wp, tab in tabs.items()}
        fig[f"eff_vs_{key}"] = plots.plot_binned_efficiency(
            out_dir / f"eff_vs_{key}.png", shown, xlabel=xlabel, title=title, n_events=n
        )
    tables["binned"] = binned

    correlation = {}
    for layer, images in (inputs_for_maps or {}).items():
        corr = pixel_score_correlation(images, s)
        correlation[layer] = corr
        fig[f"corr_{layer}"] = plots.plot_correlation_map(
            out_dir / f"corr_{layer}.png", corr, layer, title=title, n_events=n
        )
    tables["correlation"] = correlation

    result.tables = _jsonable(tables)
    summary = out_dir / SUMMARY_FILE
    try:
        summary.write_text(json.dumps({"metrics": _jsonable(m), "tables": result.tables}, indent=1))
    except OSError as err:
        raise InputFileError(f"cannot write the evaluation summary {summary}: {err}") from err
    return result
