"""The test-split evaluation of a classifier, configured per experiment (``conf/evaluation/<name>.yaml``).

:class:`ClassifierEvaluation` compares, on the same test events, the task's score with the physics
baselines its config lists (each a :class:`~calolab.evaluation.baselines.Baseline`, fitted on the
*training* split only), computes the ``test/...`` metrics, writes the PNG figures (ROC, score
distributions, efficiencies binned in the configured variables, pixel-output correlation maps,
average signal and background images) and returns the numbers behind them as JSON-able tables.
Nothing is chosen by looking at which branches happen to be present: the experiment's config says
which baselines, binnings and plots it wants. :func:`evaluate_classifier` is the photon-ID
configuration as one call on arrays.

Metric names: the net's ``test/auc``, ``test/rej50``, ``test/rej80``; a scoring baseline ``b``'s
``test/<b>_auc``, ``test/<b>_rej50``, ``test/<b>_rej80``; the reference working point ``wp`` (the
first baseline with a working point, e.g. the cut-based ``baseline``): ``test/<wp>_eff``,
``test/<wp>_rej``, the net's efficiency at that rejection ``test/eff_at_<wp>_rej`` and its relative
gain ``test/rel_eff_gain_at_<wp>_rej``, and each scoring baseline's ``test/<b>_eff_at_<wp>_rej``.

Every figure comes with its statistical uncertainty (:mod:`calolab.evaluation.uncertainty`): AUCs
``..._auc_err`` from a seeded Poisson bootstrap over the test events (``bootstrap_replicas``,
``bootstrap_seed``), efficiencies and rejections ``..._err_lo``/``..._err_hi`` from Wilson
intervals on effective counts, ``..._is_bound`` = 1 for a rejection whose cut keeps no background
(its value is then the lower limit). The comparisons the evaluation makes are logged as
``test/auc_vs_<b>`` (net minus baseline AUC) and ``test/eff_at_<wp>_rej_vs_<wp>`` (net minus
working-point efficiency), each with a paired-bootstrap ``_err``, and listed in the tables'
``comparisons`` as "net vs <b> (auc): +0.103 +- 0.012 (resolved; n_eff ...)" lines; the ROC
figure draws each curve's 68% bootstrap band.

Decorrelation (config key ``decorrelation``: name -> :class:`~calolab.evaluation.decorrelation.DecorrelationSpec`):
``test/inv_jsd50_<name>`` = 1/JSD of the background's variable passing vs failing the net's cut at
50% signal efficiency (:func:`~calolab.evaluation.decorrelation.inverse_jsd`, the registry gate's
definition), with its Poisson-bootstrap ``_err`` (half the replicas' central 68% interval); the first configured variable is also the
headline ``test/inv_jsd50``. The figure ``decorrelation_<name>`` draws the passing and failing
distributions. A variable that is constant in the test sample (one pileup condition) is skipped
with its reason in ``tables["skipped"]``; one missing from the aux branches is a ConfigError.
Subsets (config key ``subsets``: name -> ``{selection, label}``, a selection over aux branches such
as ``~is_unhealthy``): the same test events split into categories, each with the net's
``test/auc_<name>`` (and ``_err``), each scoring baseline's ``test/<b>_auc_<name>``, the counts
``test/n_events_<name>`` and, with a working point, ``test/eff_at_<wp>_rej_<name>`` (the net at the
working point's rejection in that subset); ``tables["subsets"]`` holds them as one table.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calolab import keys
from calolab.errors import CalolabError, ConfigError, InputFileError, suggest
from calolab.evaluation import plots
from calolab.evaluation import uncertainty as U
from calolab.evaluation.baselines import CutBasedTight, ShowerShapeBDT
from calolab.evaluation.bootstrap import bootstrap, check_replicas, paired_difference, spread
from calolab.evaluation.decorrelation import (
    DecorrelationSpec,
    background_histograms,
    bootstrap_inverse_jsd,
    inverse_jsd,
    plot_pass_fail,
    replica_spread,
)
from calolab.evaluation.metrics import (
    _event_arrays,
    _max_rejection,
    auc,
    background_efficiency_at,
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
#: Name of the JSON file holding ``metrics`` and ``tables`` in ``out_dir``.
SUMMARY_FILE = "evaluation.json"
#: How the bin edges of a binned efficiency are made (or a list of edges).
BIN_RULES = ("quantile", "atlas_eta", "discrete")
#: Signal efficiencies at which the bootstrap reads each replica's rejection (the ROC band).
ROC_BAND_GRID = tuple(np.round(np.linspace(0.05, 1.0, 39), 4))
#: The 68% band of the replicas: these quantiles.
BAND_QUANTILES = (0.16, 0.84)


@dataclass
class EvaluationResult:
    """What an evaluation produced.

    Attributes:
        metrics: ``test/<name>`` -> value, ready to log.
        figures: figure name (``roc``, ``eff_vs_pt``, ...) -> PNG path.
        tables: JSON-able numbers behind the figures (``binned``, ``baselines``, ``correlation``,
            ``skipped``: figure or metric -> why it was not made).
    """

    metrics: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Binning:
    """One efficiency-versus-variable figure (``eff_vs_<name>``).

    Attributes:
        name: figure and table name.
        variable: the aux branch binned in.
        label: x-axis label with unit.
        scale: multiplies the values first (e.g. 0.001: MeV -> GeV).
        absolute: bin |value| (e.g. |eta|).
        bins: ``quantile`` (equal test population), ``atlas_eta`` (the photon-ID |eta| bins),
            ``discrete`` (one bin per value when few, else quantiles), or a list of edges.
    """

    name: str
    variable: str
    label: str
    scale: float = 1.0
    absolute: bool = False
    bins: str | tuple[float, ...] = "quantile"

    @classmethod
    def from_config(cls, name: str, cfg: Mapping[str, Any]) -> Binning:
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"evaluation.binned.{name} must be a mapping, but got {cfg!r}")
        unknown = set(cfg) - {"variable", "label", "scale", "absolute", "bins"}
        if unknown or "variable" not in cfg:
            raise ConfigError(
                f"evaluation.binned.{name} takes variable, label, scale, absolute, bins, but got {sorted(cfg)}"
            )
        bins = cfg.get("bins", "quantile")
        if isinstance(bins, str):
            if bins not in BIN_RULES:
                raise ConfigError(
                    f"evaluation.binned.{name}.bins must be one of {list(BIN_RULES)} or a list of edges, "
                    f"but got {bins!r}{suggest(bins, BIN_RULES)}"
                )
        else:
            bins = tuple(float(b) for b in bins)
            if len(bins) < 2 or np.any(np.diff(bins) <= 0):
                raise ConfigError(f"evaluation.binned.{name}.bins must be increasing edges, but got {list(bins)}")
        return cls(
            name=name,
            variable=str(cfg["variable"]),
            label=str(cfg.get("label", cfg["variable"])),
            scale=float(cfg.get("scale", 1.0)),
            absolute=bool(cfg.get("absolute", False)),
            bins=bins,
        )

    def values(self, aux: Mapping[str, np.ndarray]) -> np.ndarray:
        values = np.asarray(aux[self.variable], dtype=np.float64) * self.scale
        return np.abs(values) if self.absolute else values

    def edges(self, values: np.ndarray) -> np.ndarray:
        if not isinstance(self.bins, str):
            return np.asarray(self.bins)
        return {
            "quantile": lambda v: _quantile_edges(v, N_QUANTILE_BINS),
            "atlas_eta": _eta_edges,
            "discrete": _discrete_or_quantile_edges,
        }[self.bins](values)


@dataclass(frozen=True)
class Subset:
    """A category of test events (``selection`` over aux branches) evaluated on its own."""

    name: str
    selection: str
    label: str

    @classmethod
    def from_config(cls, name: str, cfg: Mapping[str, Any]) -> Subset:
        from datamodules.reading import check_selection

        if not isinstance(cfg, Mapping) or "selection" not in cfg:
            raise ConfigError(
                f"evaluation.subsets.{name} must be {{selection: <expression>, label: ...}}, but got {cfg!r}"
            )
        unknown = set(cfg) - {"selection", "label"}
        if unknown:
            raise ConfigError(f"evaluation.subsets.{name}: unknown keys {sorted(unknown)} (expected selection, label)")
        selection = check_selection(cfg["selection"], f"evaluation.subsets.{name}.selection")
        return cls(str(name), selection, str(cfg.get("label") or name))

    @property
    def variables(self) -> list[str]:
        import ast

        return sorted(
            {n.id for n in ast.walk(ast.parse(self.selection, mode="eval")) if isinstance(n, ast.Name)} - {"abs", "np"}
        )

    def mask(self, aux: Mapping[str, np.ndarray]) -> np.ndarray:
        from datamodules.reading import evaluate_selection

        return evaluate_selection(self.selection, aux, f"evaluation.subsets.{self.name}.selection", sorted(aux))


def _split(split: Mapping, name: str, variables: Sequence[str]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``(label, weight, aux)`` of a split dict; a missing weight means unit weights."""
    if not isinstance(split, Mapping) or "label" not in split:
        raise ConfigError(
            f"{name} must be a dict with 'label', 'weight' and 'aux', but got {type(split).__name__} with keys {sorted(split) if isinstance(split, Mapping) else '-'}"
        )
    label = np.asarray(split["label"])
    weight = np.ones(label.shape) if split.get("weight") is None else np.asarray(split["weight"], dtype=np.float64)
    aux = dict(split.get("aux") or {})
    for key in variables:  # the branches read here; others may be anything
        if key in aux and np.shape(aux[key]) != label.shape:
            raise ConfigError(
                f"{name} aux branch {key!r}: expected shape {label.shape} like the labels, but got {np.shape(aux[key])}"
            )
    return label, weight, aux


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


def _describe(baseline: Any) -> dict[str, Any]:
    """What a fitted baseline learnt, for the tables (its ``describe()``, else its public state)."""
    if callable(getattr(baseline, "describe", None)):
        return baseline.describe()
    out = {}
    for key, value in vars(baseline).items():
        if key.startswith("_") or key in ("name", "label"):
            continue
        value = _jsonable(value)
        try:
            json.dumps(value)
        except TypeError:
            continue
        out[key] = value
    return out


class ClassifierEvaluation:
    """A classifier's evaluation on the test split, as one experiment configures it.

    Args:
        baselines: physics baselines (:class:`~calolab.evaluation.baselines.Baseline`), fitted on
            the training split and compared with the net on the test events; empty: the net alone.
        binned: figure name -> ``{variable, label, scale, absolute, bins}`` (:class:`Binning`):
            signal and background efficiency of the working points in bins of an aux variable.
        working_point: name of the baseline whose working point the net is compared at (its
            rejection); None takes the first baseline whose fit gave a working point (``passes``
            not None), if any.
        class_names: legend names of signal and background.
        correlation_maps: per-pixel correlation of each input image (each channel) with the output.
        average_images: average signal and background image of each input (each channel) and
            their difference.
        batch_size: events per inference batch.
        bootstrap_replicas: Poisson-bootstrap replicas over the test events behind the AUC
            uncertainties, the paired comparisons and the ROC bands.
        bootstrap_seed: seed of the replicas (the same draws for every discriminant).
        decorrelation: name -> ``{variable, label, scale, bins, eff_sig}``
            (:class:`~calolab.evaluation.decorrelation.DecorrelationSpec`): 1/JSD of the background's
            variable passing vs failing the net's cut; the first is the headline ``test/inv_jsd50``.
    """

    def __init__(
        self,
        baselines: Sequence[Any] = (),
        binned: Mapping[str, Mapping[str, Any] | None] | None = None,
        working_point: str | None = None,
        class_names: Sequence[str] = ("Signal", "Background"),
        correlation_maps: bool = True,
        average_images: bool = False,
        batch_size: int = 4096,
        bootstrap_replicas: int = 1000,
        bootstrap_seed: int = 0,
        decorrelation: Mapping[str, Mapping[str, Any] | None] | None = None,
        subsets: Mapping[str, Mapping[str, Any] | None] | None = None,
    ) -> None:
        self.baselines = [b for b in (baselines or ()) if b is not None]
        names = [b.name for b in self.baselines]
        if len(set(names)) != len(names):
            raise ConfigError(f"evaluation.baselines must have unique names, but got {names}")
        self.binned = [Binning.from_config(k, v) for k, v in (binned or {}).items() if v is not None]
        if working_point is not None and working_point not in names:
            raise ConfigError(
                f"evaluation.working_point must name one of the baselines {names}, "
                f"but got {working_point!r}{suggest(str(working_point), names)}"
            )
        self.working_point = working_point
        if len(class_names) != 2:
            raise ConfigError(f"evaluation.class_names must be [signal, background], but got {list(class_names)}")
        self.class_names = (str(class_names[0]), str(class_names[1]))
        self.correlation_maps = bool(correlation_maps)
        self.average_images = bool(average_images)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"evaluation.batch_size must be an integer >= 1, but got {batch_size!r}")
        self.batch_size = batch_size
        self.bootstrap_replicas = check_replicas(bootstrap_replicas, "evaluation.bootstrap_replicas")
        if isinstance(bootstrap_seed, bool) or not isinstance(bootstrap_seed, int) or bootstrap_seed < 0:
            raise ConfigError(f"evaluation.bootstrap_seed must be an integer >= 0, but got {bootstrap_seed!r}")
        self.bootstrap_seed = bootstrap_seed
        if decorrelation is not None and not isinstance(decorrelation, Mapping):
            raise ConfigError(f"evaluation.decorrelation must map names to variables, but got {decorrelation!r}")
        self.decorrelation = [
            DecorrelationSpec.from_config(k, v) for k, v in (decorrelation or {}).items() if v is not None
        ]
        if subsets is not None and not isinstance(subsets, Mapping):
            raise ConfigError(f"evaluation.subsets must map names to {{selection, label}}, but got {subsets!r}")
        self.subsets = [Subset.from_config(k, v) for k, v in (subsets or {}).items() if v is not None]

    # -- the pipeline's entry point --------------------------------------------------------------
    def __call__(self, task, dm, out_dir: Path, title: str = "") -> tuple[EvaluationResult, np.ndarray]:
        """Score ``dm``'s test split with ``task.predict`` and evaluate it; returns the result and the scores."""
        test = dm.arrays("test")
        score = task.predict(test.inputs, list(dm.input_names), self.batch_size)["score"]
        bad = int((~np.isfinite(score)).sum())
        if bad:
            raise CalolabError(f"the network produced {bad} non-finite scores on the test split")
        images = (
            {k: np.asarray(v) for k, v in test.inputs.items()} if self.correlation_maps or self.average_images else None
        )
        result = self.evaluate(
            score=score,
            test=_arrays(test),
            train=_arrays(dm.arrays("train")),
            out_dir=out_dir,
            title=title,
            inputs_for_maps=images,
        )
        return result, score

    @staticmethod
    def key_metrics(label: np.ndarray, score: np.ndarray, weight: np.ndarray) -> dict[str, float]:
        """The metrics the registry recomputes for candidate and champion: AUC, R50, R80, with uncertainties.

        The cheap path (no bootstrap): ``test/auc_err`` is the Hanley-McNeil closed form on the
        effective counts; R50 and R80 carry their binomial interval and ``_is_bound`` flag.
        """
        y, s, w = _event_arrays(label, score, weight)
        n_sig, n_bkg = U.effective_count(w[y]), U.effective_count(w[~y])
        value = auc(y, s, w)
        out = {keys.TEST_AUC: value, keys.TEST_AUC + U.ERR: U.hanley_mcneil(value, n_sig, n_bkg)}
        out.update(_rejection(keys.TEST_REJ50, y, s, w, 0.5))
        out.update(_rejection(keys.TEST_REJ80, y, s, w, 0.8))
        return out

    # -- the evaluation on arrays ----------------------------------------------------------------
    def _check_variables(self, aux_train: Mapping, aux_test: Mapping) -> None:
        needed = list(dict.fromkeys(v for b in self.baselines for v in b.variables))
        missing = {
            name: [v for v in needed if v not in aux] for name, aux in (("train", aux_train), ("test", aux_test))
        }
        if any(missing.values()):
            raise ConfigError(
                f"the baselines {[b.name for b in self.baselines]} need the aux variables {needed} in train and "
                f"test, but these are missing: {missing}; add them to the data config's aux list"
            )

    def evaluate(
        self,
        *,
        score: np.ndarray,
        test: Mapping,
        train: Mapping,
        out_dir: Path,
        title: str = "",
        inputs_for_maps: Mapping[str, np.ndarray] | None = None,
    ) -> EvaluationResult:
        """Evaluate test scores against the baselines fitted on train.

        Args:
            score: (N_test,) classifier output on the test events (higher = more signal-like).
            test: ``{"label": (N,), "weight": (N,), "aux": {branch: (N,)}}`` of the test split.
            train: the same for the training split; used *only* to fit the baselines.
            out_dir: where the PNGs and ``evaluation.json`` (metrics and tables) are written.
            title: sample or run name shown on every figure.
            inputs_for_maps: input name -> (N_test, C, H, W) or (N_test, H, W) test images, for the
                correlation maps and average images.

        Returns:
            The metrics, figure paths and tables (see the module docstring for metric names).
        """
        out_dir = Path(out_dir)
        read = [v for b in self.baselines for v in b.variables] + [b.variable for b in self.binned]
        read += [d.variable for d in self.decorrelation]
        read += [v for sub in self.subsets for v in sub.variables]
        y_test, w_test, aux_test = _split(test, "test", read)
        y_train, w_train, aux_train = _split(train, "train", read)
        y, s, w = _event_arrays(y_test, score, w_test)
        for layer, array in (inputs_for_maps or {}).items():  # fail before the expensive part
            if np.ndim(array) not in (3, 4) or np.shape(array)[0] != y.size:
                raise ConfigError(
                    f"inputs_for_maps[{layer!r}]: expected ({y.size}, C, H, W) test images, but got shape {np.shape(array)}"
                )
        self._check_variables(aux_train, aux_test)
        for spec in self.decorrelation:  # a missing variable fails before the expensive part
            spec.values(aux_test, "the test split")
        n = int(y.size)
        result = EvaluationResult()
        m, tables, skipped = result.metrics, result.tables, {}
        tables["skipped"] = skipped

        m["test/n_events"] = float(n)
        m["test/n_signal"] = float(y.sum())
        m["test/n_background"] = float((~y).sum())
        # the statistical power of a weighted sample: rejections far above n_eff are not resolved
        n_sig_eff, n_bkg_eff = U.effective_count(w[y]), U.effective_count(w[~y])
        m[U.N_SIGNAL_EFF], m[U.N_BACKGROUND_EFF] = n_sig_eff, n_bkg_eff
        m.update(self.key_metrics(y, s, w))
        eff_s, eff_b, _ = roc_curve(y, s, w)
        curves = [{"name": "Network", "eff_sig": eff_s, "eff_bkg": eff_b, "auc": m[keys.TEST_AUC]}]
        roc_points = []

        # baselines: fit on train, score and cut on test
        scores, passes, described = {}, {}, {}
        for b in self.baselines:
            b.fit(aux_train, y_train, w_train)
            described[b.name] = {"label": b.label, **_describe(b)}
            bs = b.score(aux_test)
            if bs is not None:
                scores[b.name] = np.asarray(bs, dtype=np.float64)
            bp = b.passes(aux_test)
            if bp is not None:
                passes[b.name] = np.asarray(bp, dtype=bool)
        if not self.baselines:
            skipped["baselines"] = "no baselines configured for this experiment (evaluation.baselines)"
        tables["baselines"] = described
        for name, bs in scores.items():
            b = self._baseline(name)
            finite = np.isfinite(bs)
            ranked = rankable(bs)
            m[f"test/{name}_auc"] = auc(y, ranked, w)
            m.update(_rejection(f"test/{name}_rej50", y, ranked, w, 0.5))
            m.update(_rejection(f"test/{name}_rej80", y, ranked, w, 0.8))
            bs_eff_s, bs_eff_b, thr = roc_curve(y, ranked, w)
            keep = thr > (ranked.min() if not finite.all() else -np.inf)  # drop the points that take rejected events
            curves.append(
                {"name": b.label, "eff_sig": bs_eff_s[keep], "eff_bkg": bs_eff_b[keep], "auc": m[f"test/{name}_auc"]}
            )
            scores[name] = ranked

        wp = self.working_point if self.working_point is not None else next(iter(passes), None)
        if wp is not None and wp not in passes:
            raise ConfigError(
                f"evaluation.working_point {wp!r}: that baseline has no working point (passes() gave None)"
            )
        reps = bootstrap(
            y,
            {"net": s, **scores},
            w,
            replicas=self.bootstrap_replicas,
            seed=self.bootstrap_seed,
            roc_grid=np.asarray(ROC_BAND_GRID),
            working_point=passes[wp] if wp is not None else None,
        )
        comparisons = self._uncertainties(m, reps, scores, n_sig_eff, n_bkg_eff)
        for curve, name in zip(curves, ["net", *scores], strict=True):
            curve["band"] = {"eff_sig": ROC_BAND_GRID, **_band(reps[name]["roc"])}
            curve["auc_err"] = spread(reps[name]["auc"])
        if wp is not None:
            base_pass = passes[wp]
            base_eff = _weighted_eff(base_pass, y, w)
            base_eb = _weighted_eff(base_pass, ~y, w)
            # the net is compared at the cuts' very rejection (or the largest this sample expresses)
            base_rej = 1.0 / base_eb if base_eb > 0 else _max_rejection(y, w)
            net_eff, net_thr = efficiency_at_rejection(y, s, base_rej, w)
            m.update(_efficiency(f"test/{wp}_eff", base_eff, n_sig_eff))
            m.update(U.rejection(base_eb, n_bkg_eff, _max_rejection(y, w)).metrics(f"test/{wp}_rej"))
            m.update(_efficiency(f"test/eff_at_{wp}_rej", net_eff, n_sig_eff))
            if base_eff > 0:  # left out when the cuts keep no test signal (no ratio to take)
                m[f"test/rel_eff_gain_at_{wp}_rej"] = net_eff / base_eff - 1.0
            for name, bs in scores.items():
                if name != wp:  # the reference's own efficiency is test/<wp>_eff
                    eff = efficiency_at_rejection(y, bs, base_rej, w)[0]
                    m.update(_efficiency(f"test/{name}_eff_at_{wp}_rej", eff, n_sig_eff))
            key = f"test/eff_at_{wp}_rej{U.VS}{wp}"
            unresolved, err = paired_difference(reps["net"]["eff_at_wp_rej"], reps["_working_point"]["eff"])
            m[key], m[key + U.ERR] = net_eff - base_eff, err
            if (
                unresolved > U.UNRESOLVED_FRACTION
            ):  # the cuts keep no background in many replicas: no difference to quote
                m[key + U.IS_BOUND] = 1.0
            comparisons.append(
                U.Comparison(
                    "net",
                    wp,
                    f"efficiency at {wp} rejection",
                    net_eff - base_eff,
                    err,
                    n_sig_eff,
                    n_bkg_eff,
                    bound=bool(unresolved > U.UNRESOLVED_FRACTION),
                )
            )
            described[wp]["classifier_threshold_at_rejection"] = net_thr
            label = self._baseline(wp).label
            wp_rej = m[f"test/{wp}_rej"]  # a lower bound (drawn as one) when the cuts keep no background
            roc_points.append({"name": label, "eff_sig": base_eff, "rejection": wp_rej, "bound": base_eb <= 0})
            working_points = {
                "classifier": (f"Network at {label} " + r"$1/\varepsilon_B$", s >= net_thr),
                "cut_based": (label, base_pass),  # a baseline's working point is a selection (cuts)
            }
        else:
            _, thr50 = efficiency_at_rejection(y, s, rejection_at_efficiency(y, s, 0.5, w), w)
            working_points = {"classifier": (r"Network at $\varepsilon_S$ = 50%", s >= thr50)}

        tables["comparisons"] = [c.as_dict() for c in comparisons]
        tables["uncertainty"] = {
            "method": "AUC and comparisons: std of Poisson-bootstrap replicas (paired: the same draws for "
            "every discriminant); efficiencies and rejections: Wilson 68% intervals on effective counts",
            "replicas": self.bootstrap_replicas,
            "seed": self.bootstrap_seed,
            "n_signal_eff": n_sig_eff,
            "n_background_eff": n_bkg_eff,
            "resolved_sigma": U.RESOLVED_SIGMA,
            "roc_bands": {
                name: {"eff_sig": list(ROC_BAND_GRID), **_band(reps[name]["roc"])} for name in ["net", *scores]
            },
        }
        fig = result.figures
        fig["roc"] = plots.plot_roc(out_dir / "roc.png", curves, roc_points, title=title, n_events=n)
        fig["score"] = plots.plot_score(out_dir / "score.png", y, s, w, title=title, class_names=self.class_names)
        tables["binned"] = self._binned(y, w, aux_test, working_points, fig, skipped, out_dir, title, n)
        tables["decorrelation"] = self._decorrelation(y, s, w, aux_test, m, fig, skipped, out_dir, title, n)
        tables["subsets"] = self._subsets(y, s, w, aux_test, scores, passes.get(wp) if wp else None, wp, m)
        tables["correlation"] = {}
        for name, channel in _channels(inputs_for_maps or {}).items():
            if self.correlation_maps:
                corr = pixel_score_correlation(channel, s)
                tables["correlation"][name] = corr
                fig[f"corr_{name}"] = plots.plot_correlation_map(
                    out_dir / f"corr_{name}.png", corr, name, title=title, n_events=n
                )
            if self.average_images:
                sig_avg = np.average(channel[y], axis=0, weights=w[y])
                bkg_avg = np.average(channel[~y], axis=0, weights=w[~y])
                tables.setdefault("average_images", {})[name] = {"signal": sig_avg, "background": bkg_avg}
                fig[f"average_{name}"] = plots.plot_average_images(
                    out_dir / f"average_{name}.png",
                    sig_avg,
                    bkg_avg,
                    name,
                    class_names=self.class_names,
                    title=title,
                    n_events=n,
                )

        result.tables = _jsonable(tables)
        summary = out_dir / SUMMARY_FILE
        try:
            summary.write_text(json.dumps({"metrics": _jsonable(m), "tables": result.tables}, indent=1))
        except OSError as err:
            raise InputFileError(f"cannot write the evaluation summary {summary}: {err}") from err
        return result

    def _uncertainties(self, m, reps, scores, n_sig_eff, n_bkg_eff) -> list[U.Comparison]:
        """AUC errors from the replicas, and the net-vs-baseline AUC comparisons (paired)."""
        m[keys.TEST_AUC + U.ERR] = spread(reps["net"]["auc"])
        comparisons = []
        for name in scores:
            m[f"test/{name}_auc{U.ERR}"] = spread(reps[name]["auc"])
            key = f"test/auc{U.VS}{name}"
            _, err = paired_difference(reps["net"]["auc"], reps[name]["auc"])
            m[key], m[key + U.ERR] = m[keys.TEST_AUC] - m[f"test/{name}_auc"], err
            comparisons.append(U.Comparison("net", name, "AUC", m[key], err, n_sig_eff, n_bkg_eff))
        return comparisons

    def _subsets(self, y, s, w, aux_test, scores, wp_pass, wp, m) -> dict[str, Any]:
        """Per-subset metrics (see the module docstring) and their table."""
        table = {}
        for sub in self.subsets:
            mask = sub.mask(aux_test)
            ys, ss, ws = y[mask], s[mask], w[mask]
            row: dict[str, Any] = {"label": sub.label, "selection": sub.selection, "n_events": int(mask.sum())}
            m[f"test/n_events_{sub.name}"] = float(mask.sum())
            if ys.all() or not ys.any():
                row["skipped"] = "needs signal and background events in the subset"
                table[sub.name] = row
                continue
            n_sig, n_bkg = U.effective_count(ws[ys]), U.effective_count(ws[~ys])
            value = auc(ys, ss, ws)
            m[f"test/auc_{sub.name}"], m[f"test/auc_{sub.name}{U.ERR}"] = value, U.hanley_mcneil(value, n_sig, n_bkg)
            row["auc"], row["auc_err"] = value, m[f"test/auc_{sub.name}{U.ERR}"]
            for name, bs in scores.items():
                row[f"{name}_auc"] = m[f"test/{name}_auc_{sub.name}"] = auc(ys, bs[mask], ws)
            if wp_pass is not None:
                eb = _weighted_eff(wp_pass[mask], ~ys, ws)
                rej = 1.0 / eb if eb > 0 else _max_rejection(ys, ws)
                eff = efficiency_at_rejection(ys, ss, rej, ws)[0]
                m.update(_efficiency(f"test/eff_at_{wp}_rej_{sub.name}", eff, n_sig))
                row[f"{wp}_eff"] = _weighted_eff(wp_pass[mask], ys, ws)
                row[f"eff_at_{wp}_rej"] = eff
            table[sub.name] = row
        return table

    def _baseline(self, name: str) -> Any:
        return next(b for b in self.baselines if b.name == name)

    def _decorrelation(self, y, s, w, aux_test, m, fig, skipped, out_dir, title, n) -> dict[str, Any]:
        """1/JSD (with bootstrap error) and the passing/failing figure per configured variable."""
        out: dict[str, Any] = {}
        for i, spec in enumerate(self.decorrelation):
            values = spec.values(aux_test, "the test split")
            key = f"test/inv_jsd{spec.tag}"
            if np.ptp(values[~y]) == 0:
                skipped[f"{key}_{spec.name}"] = (
                    f"{spec.variable} is constant ({values[~y][0]:g}) in the test background"
                )
                continue
            try:
                value = inverse_jsd(y, s, w, values, spec.eff_sig, spec.bins)
            except ConfigError as err:  # a cut that keeps all or no background: nothing to compare
                skipped[f"{key}_{spec.name}"] = str(err)
                continue
            reps = bootstrap_inverse_jsd(
                y, s, w, values, spec.eff_sig, spec.bins, replicas=self.bootstrap_replicas, seed=self.bootstrap_seed
            )
            err = replica_spread(reps)  # 1/JSD is heavy-tailed: half the 68% interval, not the std
            names = [f"{key}_{spec.name}"] + ([key] if i == 0 else [])
            for name in names:
                m[name], m[name + U.ERR] = value, err
            p, q, edges = background_histograms(y, s, w, values, spec.eff_sig, spec.bins)
            out[spec.name] = {
                "variable": spec.variable,
                "eff_sig": spec.eff_sig,
                "edges": edges,
                "passing": p,
                "failing": q,
                "inverse_jsd": value,
                "inverse_jsd_err": err,
            }
            fig[f"decorrelation_{spec.name}"] = plot_pass_fail(
                out_dir / f"decorrelation_{spec.name}.png",
                [{"name": "Network", "edges": edges, "passing": p, "failing": q, "inv_jsd": value}],
                xlabel=spec.label,
                title=title,
                n_events=n,
            )
        return out

    def _binned(self, y, w, aux_test, working_points, fig, skipped, out_dir, title, n) -> dict[str, Any]:
        binned: dict[str, Any] = {}
        for spec in self.binned:
            key = spec.name
            if spec.variable not in aux_test:
                skipped[f"eff_vs_{key}"] = f"no {spec.variable!r} in the test aux branches"
                continue
            values = spec.values(aux_test)
            if not np.all(np.isfinite(values)):
                raise ConfigError(
                    f"test aux branch {spec.variable!r}: expected finite values to bin in, but got NaN or inf"
                )
            if np.ptp(values) == 0:  # one value has no dependence to show (e.g. a single pileup condition)
                skipped[f"eff_vs_{key}"] = f"{spec.variable} is constant ({values[0]:g}) in the test sample"
                continue
            edges = spec.edges(values)
            tabs = {wp: binned_efficiency(y, passed, values, edges, w) for wp, (_, passed) in working_points.items()}
            binned[key] = {
                "variable": spec.variable,
                "xlabel": spec.label,
                "working_points": {wp: {"label": working_points[wp][0], **tab} for wp, tab in tabs.items()},
            }
            shown = {working_points[wp][0]: tab for wp, tab in tabs.items()}
            fig[f"eff_vs_{key}"] = plots.plot_binned_efficiency(
                out_dir / f"eff_vs_{key}.png", shown, xlabel=spec.label, title=title, n_events=n
            )
        return binned


def _rejection(key: str, y: np.ndarray, s: np.ndarray, w: np.ndarray, eff_sig: float) -> dict[str, float]:
    """``key`` = 1/eps_B at ``eff_sig`` with its binomial interval; a lower bound, flagged, when no background passes."""
    eps_b = background_efficiency_at(y, s, eff_sig, w)
    return U.rejection(eps_b, U.effective_count(w[~y]), _max_rejection(y, w)).metrics(key)


def _efficiency(key: str, eff: float, n_eff: float) -> dict[str, float]:
    lo, hi = U.wilson_interval(eff, n_eff)
    return U.Measurement(eff, eff - lo, hi - eff).metrics(key, flag=False)


def _band(roc: np.ndarray) -> dict[str, list]:
    """The 68% band of replica rejections (R, G) per grid point, by order statistics (inf: unbounded)."""
    r = np.sort(np.asarray(roc, dtype=np.float64), axis=0)
    n = r.shape[0]
    lo = r[int(np.floor(BAND_QUANTILES[0] * (n - 1)))]
    hi = r[int(np.ceil(BAND_QUANTILES[1] * (n - 1)))]
    return {"lo": lo.tolist(), "hi": hi.tolist()}


def rankable(score: np.ndarray) -> np.ndarray:
    """A baseline's score with -inf (events it rejects outright, e.g. outside a mass window) put
    just below its lowest finite value, so that ROC read-outs, which need finite scores, rank them last."""
    score = np.asarray(score, dtype=np.float64)
    finite = np.isfinite(score)
    return np.where(finite, score, score[finite].min() - 1.0 if finite.any() else 0.0)


def _channels(images: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Input images split into one (N, H, W) array per channel, named ``<input>`` or ``<input>_<c>``."""
    out = {}
    for layer, array in images.items():
        array = np.asarray(array)
        if array.ndim == 3:
            out[layer] = array
        elif array.shape[1] == 1:
            out[layer] = array[:, 0]
        else:
            for c in range(array.shape[1]):
                out[f"{layer}_{c}"] = array[:, c]
    return out


def _arrays(a) -> dict[str, Any]:
    """Label, weight and aux arrays of a datamodule split, as :meth:`ClassifierEvaluation.evaluate` takes them."""
    return {
        "label": np.asarray(a.label),
        "weight": np.asarray(a.weight),
        "aux": {k: np.asarray(v) for k, v in a.aux.items()},
    }


#: The photon-ID evaluation (as ``conf/evaluation/photon_id.yaml``): efficiencies in pT, |eta|, mu.
PHOTON_BINNED = {
    "pt": {"variable": "ph_pt", "label": r"Photon $p_T$ [GeV]", "scale": 0.001, "bins": "quantile"},
    "eta": {"variable": "ph_eta", "label": r"Photon $|\eta|$", "absolute": True, "bins": "atlas_eta"},
    "mu": {"variable": "mu", "label": r"Pileup $\mu$", "bins": "discrete"},
}


def evaluate_classifier(
    *,
    score: np.ndarray,
    test: dict,
    train: dict,
    out_dir: Path,
    title: str = "",
    inputs_for_maps: dict[str, np.ndarray] | None = None,
    baselines: Sequence[Any] | None = None,
) -> EvaluationResult:
    """The photon-ID evaluation on arrays: :class:`ClassifierEvaluation` as ``conf/evaluation/photon_id.yaml``.

    Args:
        score, test, train, out_dir, title: as :meth:`ClassifierEvaluation.evaluate`.
        inputs_for_maps: layer name -> (N_test, 1, H, W) test images; one correlation map each.
        baselines: None: the photon baselines (tight-like cuts and the shower-shape BDT, which need
            the shower shapes in both splits' aux); ``[]``: the network alone.
    """
    evaluation = ClassifierEvaluation(
        baselines=[CutBasedTight(), ShowerShapeBDT()] if baselines is None else baselines,
        binned=PHOTON_BINNED,
        class_names=("Prompt photons", "Jets") if baselines is None else ("Signal", "Background"),
        correlation_maps=True,
    )
    return evaluation.evaluate(
        score=score, test=test, train=train, out_dir=out_dir, title=title, inputs_for_maps=inputs_for_maps
    )
