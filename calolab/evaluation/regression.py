"""The test-split evaluation of an energy regression, configured per experiment (``conf/evaluation/cluster_calibration.yaml``).

:class:`RegressionEvaluation` is the regression counterpart of
:class:`~calolab.evaluation.report.ClassifierEvaluation`, called by the pipeline the same way
(``evaluation(task, dm, out_dir, title)``). It predicts the test split's energies through the
task's one inference path (:meth:`~lightning_modules.task.Task.predict`, output ``energy``),
fits the configured energy baselines (:mod:`calolab.evaluation.baselines._energy`: the EM scale,
a local-hadronic-style weighting) on the *training* split, and compares them on the same test
events through the response R = E / E_true:

- ``test/response`` (median R) and ``test/resolution`` (IQR/2 of R over its median: the headline,
  lower is better, what ``conf/registry/regression.yaml`` compares), each with a Poisson-bootstrap
  ``_err``; the same per baseline ``test/<b>_response``, ``test/<b>_resolution``, and the paired
  differences ``test/resolution_vs_<b>`` (net minus baseline, same bootstrap draws) with ``_err``;
- per bin of truth energy ``test/resolution_e<i>`` / ``test/response_e<i>`` and of |eta|
  ``test/resolution_eta<i>``, with the bins' edges in the tables (``binned``);
- figures ``response_vs_energy`` and ``resolution_vs_energy`` (net and baselines, bootstrap
  error bars), ``resolution_vs_eta``, and the distribution of R (``response``).

:meth:`RegressionEvaluation.frozen_metrics` is the registry's cheap path on a frozen test set:
the headline metrics, no baselines, no figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from calolab import keys
from calolab.errors import CalolabError, ConfigError, suggest
from calolab.evaluation import plots
from calolab.evaluation.bootstrap import CHUNK, check_replicas, poisson1
from calolab.evaluation.report import EvaluationResult, _jsonable

QUANTILES = (0.25, 0.5, 0.75)


def _check_edges(name: str, edges: Sequence[float]) -> np.ndarray:
    e = np.asarray(list(edges), float)
    if e.ndim != 1 or e.size < 2 or not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
        raise ConfigError(f"evaluation.{name} must be at least two increasing finite edges, but got {list(edges)}")
    return e


def summarise(response: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(median, IQR/2 / median) of ``response`` for each row of ``weights`` (R, N) (one row of ones if None).

    Weighted quantiles: the first sorted response whose cumulative weight reaches q of the row's total.
    """
    r = np.asarray(response, np.float64)
    order = np.argsort(r, kind="stable")
    rs = r[order]
    w = np.ones((1, r.size), np.uint8) if weights is None else np.asarray(weights)
    if r.size == 0:
        nan = np.full(len(w), np.nan)
        return nan, nan
    q = np.empty((len(QUANTILES), len(w)))
    for start in range(0, len(w), CHUNK):  # bounded memory: (CHUNK, N) cumulative sums at a time
        cw = np.cumsum(w[start : start + CHUNK][:, order], axis=1, dtype=np.float64)  # (R, N)
        total = cw[:, -1:]
        for i, f in enumerate(QUANTILES):
            q[i, start : start + CHUNK] = rs[np.minimum((cw < f * total).sum(axis=1), r.size - 1)]
    with np.errstate(divide="ignore", invalid="ignore"):
        return q[1], np.where(q[1] > 0, (q[2] - q[0]) / 2.0 / q[1], np.nan)


class RegressionEvaluation:
    """An energy regression's evaluation on the test split, as one experiment configures it (see module docstring).

    Args:
        truth: the aux variable holding the truth energy (MeV).
        baselines: energy baselines (``_target_`` configs of
            :class:`~calolab.evaluation.baselines.EnergyBaseline` subclasses), fitted on the training split.
        energy_bins: truth-energy bin edges in GeV for the binned response and resolution.
        eta: the aux variable binned in |eta|, or None.
        eta_bins: |eta| bin edges.
        unit_scale: multiplies MeV into the energy axis' unit (0.001: GeV).
        bootstrap_replicas: Poisson-bootstrap replicas of every error.
        bootstrap_seed: their seed (fixed: a re-evaluation reproduces its errors).
        batch_size: events per prediction batch.
    """

    def __init__(
        self,
        truth: str = "truth_e",
        baselines: Sequence[Any] = (),
        energy_bins: Sequence[float] = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0),
        eta: str | None = "cluster_eta",
        eta_bins: Sequence[float] = (0.0, 0.2, 0.4, 0.7),
        unit_scale: float = 0.001,
        bootstrap_replicas: int = 200,
        bootstrap_seed: int = 0,
        batch_size: int = 4096,
    ) -> None:
        if not isinstance(truth, str) or not truth:
            raise ConfigError(f"evaluation.truth must name the truth-energy aux variable, but got {truth!r}")
        self.truth = truth
        self.baselines = [b for b in (baselines or ()) if b is not None]
        names = [b.name for b in self.baselines]
        if len(set(names)) != len(names):
            raise ConfigError(f"evaluation.baselines must have unique names, but got {names}")
        self.energy_bins = _check_edges("energy_bins", energy_bins)
        self.eta = eta
        self.eta_bins = _check_edges("eta_bins", eta_bins)
        if not unit_scale > 0:
            raise ConfigError(f"evaluation.unit_scale must be > 0, but got {unit_scale!r}")
        self.unit_scale = float(unit_scale)
        self.bootstrap_replicas = check_replicas(bootstrap_replicas, "evaluation.bootstrap_replicas")
        self.bootstrap_seed = int(bootstrap_seed)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"evaluation.batch_size must be an integer >= 1, but got {batch_size!r}")
        self.batch_size = batch_size

    # -- pieces -------------------------------------------------------------------------------------
    def _aux(self, aux: Mapping[str, np.ndarray], name: str) -> np.ndarray:
        if name not in aux:
            raise ConfigError(
                f"the regression evaluation needs the aux variable {name!r}{suggest(name, list(aux))}; "
                f"aux variables: {', '.join(sorted(aux))} (add it to data.aux)"
            )
        return np.asarray(aux[name], np.float64)

    def predict(self, task, inputs: Mapping[str, np.ndarray], input_names: Sequence[str]) -> np.ndarray:
        out = task.predict(inputs, input_names, self.batch_size)
        if "energy" not in out:
            raise CalolabError(f"the regression evaluation needs a task with an 'energy' output, but got {sorted(out)}")
        energy = np.asarray(out["energy"], np.float64)
        bad = int((~np.isfinite(energy)).sum())
        if bad:
            raise CalolabError(f"the regression predicted {bad} non-finite energies on the test split")
        return energy

    def _draws(self, n: int) -> np.ndarray:
        rng = np.random.default_rng(self.bootstrap_seed)
        return np.concatenate(
            [
                poisson1(rng, (min(CHUNK, self.bootstrap_replicas - i), n))
                for i in range(0, self.bootstrap_replicas, CHUNK)
            ]
        )

    def headline(self, energy: np.ndarray, truth: np.ndarray) -> dict[str, float]:
        median, resolution = summarise(energy / truth)
        return {keys.TEST_RESPONSE: float(median[0]), keys.TEST_RESOLUTION: float(resolution[0])}

    def frozen_metrics(
        self, task, inputs: Mapping[str, np.ndarray], input_names: Sequence[str], label: np.ndarray, aux=None
    ) -> dict[str, float]:
        """The registry's cheap path on a frozen test set: response and resolution, no baselines or figures."""
        if aux is None:
            raise CalolabError("the regression evaluation needs the test set's aux variables (the truth energy)")
        return self.headline(self.predict(task, inputs, input_names), self._aux(aux, self.truth))

    # -- the pipeline's entry point ----------------------------------------------------------------
    def __call__(self, task, dm, out_dir: Path, title: str = "") -> tuple[EvaluationResult, dict[str, np.ndarray]]:
        train, test = dm.arrays("train"), dm.arrays("test")
        truth = self._aux(test.aux, self.truth)
        if np.any(truth <= 0):
            raise ConfigError(
                f"truth energies {self.truth!r} must be > 0, but {int((truth <= 0).sum())} test events are not"
            )
        estimates = {"net": self.predict(task, test.inputs, list(dm.input_names))}
        fitted = {}
        for b in self.baselines:
            for v in b.variables:
                self._aux(train.aux, v)
            b.fit(train.aux, np.asarray(train.label), self._aux(train.aux, self.truth))
            estimates[b.name] = np.asarray(b.energy(test.aux), np.float64)
            fitted[b.name] = b.describe()
        labels = {"net": "Network", **{b.name: b.label for b in self.baselines}}
        response = {k: e / truth for k, e in estimates.items()}
        draws = self._draws(len(truth))  # (R, N): the same draws for every estimate (paired differences)

        metrics: dict[str, float] = {"test/n_events": float(len(truth))}
        boot: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for k, r in response.items():
            prefix = "test/" if k == "net" else f"test/{k}_"
            med, res = summarise(r)
            boot[k] = summarise(r, draws)
            metrics[f"{prefix}response"], metrics[f"{prefix}response_err"] = float(med[0]), float(np.std(boot[k][0]))
            metrics[f"{prefix}resolution"], metrics[f"{prefix}resolution_err"] = (
                float(res[0]),
                float(np.std(boot[k][1])),
            )
        comparisons = []
        for b in self.baselines:
            diff = metrics[keys.TEST_RESOLUTION] - metrics[f"test/{b.name}_resolution"]
            err = float(np.std(boot["net"][1] - boot[b.name][1]))
            metrics[f"test/resolution_vs_{b.name}"], metrics[f"test/resolution_vs_{b.name}_err"] = diff, err
            comparisons.append(
                f"net vs {b.name} (resolution): {diff:+.4f} +- {err:.4f} "
                f"({'resolved' if abs(diff) > 2 * err else 'not resolved'} at 2 sigma)"
            )

        binned = {"energy": self._binned(response, truth * self.unit_scale, self.energy_bins, draws, metrics, "e")}
        if self.eta is not None:
            eta = np.abs(self._aux(test.aux, self.eta))
            binned["eta"] = self._binned(response, eta, self.eta_bins, draws, metrics, "eta")
        result = EvaluationResult(metrics=metrics)
        result.tables = _jsonable({"binned": binned, "baselines": fitted, "comparisons": comparisons, "labels": labels})
        out_dir = Path(out_dir)
        rlabel = plots._rlabel(title, len(truth))
        xlabel = "Truth energy [GeV]" if self.unit_scale == 0.001 else "Truth energy"
        result.figures["response_vs_energy"] = self._plot_binned(
            out_dir / "response_vs_energy.png",
            binned["energy"],
            "response",
            xlabel,
            "Median response $E/E_{true}$",
            labels,
            rlabel,
            log=True,
        )
        result.figures["resolution_vs_energy"] = self._plot_binned(
            out_dir / "resolution_vs_energy.png",
            binned["energy"],
            "resolution",
            xlabel,
            "Resolution IQR/2 / median",
            labels,
            rlabel,
            log=True,
        )
        if self.eta is not None:
            result.figures["resolution_vs_eta"] = self._plot_binned(
                out_dir / "resolution_vs_eta.png",
                binned["eta"],
                "resolution",
                r"Cluster $|\eta|$",
                "Resolution IQR/2 / median",
                labels,
                rlabel,
                log=False,
            )
        result.figures["response"] = self._plot_response(out_dir / "response.png", response, labels, rlabel)
        return result, {"energy": estimates["net"].astype(np.float32), "truth": truth.astype(np.float32)}

    def _binned(self, response, x, edges, draws, metrics, tag) -> dict[str, Any]:
        idx = np.searchsorted(edges, x, side="right") - 1
        table: dict[str, Any] = {"edges": edges.tolist(), "events": [], "estimates": {}}
        for i in range(len(edges) - 1):
            table["events"].append(int((idx == i).sum()))
        for k, r in response.items():
            rows = {"response": [], "response_err": [], "resolution": [], "resolution_err": []}
            for i in range(len(edges) - 1):
                sel = idx == i
                if sel.sum() < 4:
                    for v in rows.values():
                        v.append(None)
                    continue
                med, res = summarise(r[sel])
                bmed, bres = summarise(r[sel], draws[:, sel])
                rows["response"].append(float(med[0]))
                rows["response_err"].append(float(np.std(bmed)))
                rows["resolution"].append(float(res[0]))
                rows["resolution_err"].append(float(np.std(bres)))
                if k == "net":
                    metrics[f"test/response_{tag}{i}"] = float(med[0])
                    metrics[f"test/resolution_{tag}{i}"] = float(res[0])
            table["estimates"][k] = rows
        return table

    @staticmethod
    def _plot_binned(path, table, what, xlabel, ylabel, labels, rlabel, log) -> Path:
        edges = np.asarray(table["edges"])
        centres = np.sqrt(edges[:-1] * edges[1:]) if log and edges[0] > 0 else (edges[:-1] + edges[1:]) / 2
        with plots._figure(path, rlabel) as (_, ax):
            for k, rows in table["estimates"].items():
                y = np.array([np.nan if v is None else v for v in rows[what]], float)
                err = np.array([np.nan if v is None else v for v in rows[f"{what}_err"]], float)
                ax.errorbar(
                    centres, y, yerr=err, xerr=None, marker="o", ls="-" if k == "net" else "--", label=labels[k]
                )
            if log and edges[0] > 0:
                ax.set_xscale("log")
            if what == "response":
                ax.axhline(1.0, color="grey", lw=0.8)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.legend(fontsize="small")
        return Path(path)

    @staticmethod
    def _plot_response(path, response, labels, rlabel) -> Path:
        edges = np.linspace(0.0, 2.0, 81)
        with plots._figure(path, rlabel) as (_, ax):
            for k, r in response.items():
                ax.hist(np.clip(r, edges[0], edges[-1]), edges, histtype="step", density=True, label=labels[k])
            ax.set_xlabel("Response $E/E_{true}$")
            ax.set_ylabel("Normalised")
            ax.legend(fontsize="small")
        return Path(path)
