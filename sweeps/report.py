"""The sweep's MLflow side: a parent run per worker invocation, trial states, the study report.

The parent run is tagged with the study (name, storage without credentials, worker); each
trial's child run (created by the training process, see :mod:`sweeps.trial`) gets its final
Optuna state as the tag ``optuna.state`` once the trial is told. At the end the parent run
gets the best value(s) and parameters, and the study's plots (optimisation history, parameter
importances, parallel coordinates; the Pareto front for several objectives) as PNGs.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from calolab import keys
from calolab.tracking import TrackingStore
from sweeps.storage import redact
from sweeps.trial import this_process

log = logging.getLogger(__name__)
PARENT_ATTR = "calolab.parent_run_id"  # a trial's user attribute: its worker's parent run
#: reference points of a multi-objective study, marked on its Pareto plot and listed in
#: ``pareto_front.json`` (``"reference": true``) whether or not they are on the front: parameter ->
#: value. ``model.lam = 0`` is the undecorrelated tagger of an adversarial lambda scan.
REFERENCE_PARAMS: dict[str, tuple[object, str]] = {"model.lam": (0.0, r"$\lambda$ = 0 (no adversary)")}


def reference_trials(trials: list[optuna.trial.FrozenTrial]) -> list[tuple[optuna.trial.FrozenTrial, str]]:
    """The complete trials at a reference parameter value (:data:`REFERENCE_PARAMS`), with their label."""
    out = []
    for t in trials:
        for key, (value, label) in REFERENCE_PARAMS.items():
            if key in t.params and t.params[key] == value and t.state == TrialState.COMPLETE:
                out.append((t, label))
    return out


class ParentRun:
    """The parent MLflow run of one worker's part of a study."""

    def __init__(
        self,
        store: TrackingStore,
        experiment: str,
        study: optuna.Study,
        storage_spec: str,
        tags: dict[str, str] | None = None,
    ):
        self.client: MlflowClient = store.client()
        worker = this_process()
        run = self.client.create_run(
            store.experiment_id(experiment),
            run_name=f"sweep-{study.study_name}",
            tags={
                "optuna.study_name": study.study_name,
                "optuna.storage": redact(storage_spec),
                "calolab.sweep.worker": worker,
                "mlflow.source.name": "calolab train -m",
                **(tags or {}),
            },
        )
        self.run_id = run.info.run_id

    def trial_told(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Mirror the trial's final state on its child run (NaN results end FAILED there too)."""
        run_id = trial.user_attrs.get("mlflow_run_id")
        if not run_id:
            return
        self.client.set_tag(run_id, "optuna.state", trial.state.name)
        reason = trial.user_attrs.get("fail_reason")
        if trial.state == TrialState.FAIL and reason:
            self.client.set_tag(run_id, keys.ERROR_TAG, reason[:5000])
            if self.client.get_run(run_id).info.status != "FAILED":
                self.client.set_terminated(run_id, "FAILED")

    def finish(self, study: optuna.Study, metrics: list[str], status: str = "FINISHED") -> None:
        """Best value(s) and params, the study's counts and plots; then end the run."""
        try:
            self._summarise(study, metrics)
        finally:
            self.client.set_terminated(self.run_id, status)

    def _summarise(self, study: optuna.Study, metrics: list[str]) -> None:
        trials = study.get_trials(deepcopy=False)
        for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
            self.client.log_metric(self.run_id, f"sweep/n_{state.name.lower()}", sum(t.state == state for t in trials))
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if not complete:
            return
        if len(metrics) == 1:
            best = study.best_trial
            self.client.log_metric(self.run_id, f"best/{metrics[0]}", best.value)
            self.client.log_metric(self.run_id, "best/trial_number", best.number)
            for key, value in best.params.items():
                self.client.log_param(self.run_id, f"best.{key}", value)
        else:
            self.client.log_metric(self.run_id, "sweep/n_pareto", len(study.best_trials))
            self.client.log_dict(self.run_id, pareto_rows(study, metrics), "pareto_front.json")
        with tempfile.TemporaryDirectory(prefix="calolab-sweep-") as tmp:
            for path in study_plots(study, metrics, Path(tmp)):
                self.client.log_artifact(self.run_id, str(path), "plots")


def close_dead_runs(client: MlflowClient, trials: list[optuna.trial.FrozenTrial]) -> None:
    """End the MLflow runs a dead worker left RUNNING: each recovered trial's child run and the
    worker's parent run become FAILED with the reason in ``calolab.error``."""
    for trial in trials:
        reason = trial.user_attrs.get("fail_reason", "worker died")
        for run_id, why, child in (
            (trial.user_attrs.get("mlflow_run_id"), reason, True),
            (trial.user_attrs.get(PARENT_ATTR), f"trial {trial.number}: {reason}", False),
        ):
            if not run_id:
                continue
            try:
                run = client.get_run(run_id)
            except Exception as err:  # a run in another tracking store: nothing to close here
                log.warning("cannot close run %s of dead trial %d: %s", run_id, trial.number, err)
                continue
            if run.info.status == "RUNNING":
                client.set_tag(run_id, keys.ERROR_TAG, why[:5000])
                if child:
                    client.set_tag(run_id, "optuna.state", "FAIL")
                client.set_terminated(run_id, "FAILED")


def pareto_rows(study: optuna.Study, metrics: list[str]) -> list[dict]:
    """The Pareto front as a table (number, values, params), plus the reference trials
    (:data:`REFERENCE_PARAMS`), flagged ``reference`` and ``pareto``, even when off the front."""
    front = {t.number for t in study.best_trials}
    rows = [
        {"number": t.number, "values": dict(zip(metrics, t.values, strict=True)), "params": t.params}
        for t in study.best_trials
    ]
    for t, _ in reference_trials(study.get_trials(deepcopy=False)):
        if t.number not in front:
            rows.append({"number": t.number, "values": dict(zip(metrics, t.values, strict=True)), "params": t.params})
        next(r for r in rows if r["number"] == t.number).update(reference=True, pareto=t.number in front)
    return rows


def _mark_references(study: optuna.Study, ax):
    """Circle the reference trials (:data:`REFERENCE_PARAMS`) on a two-objective Pareto plot."""
    refs = reference_trials(study.get_trials(deepcopy=False))
    if refs and len(study.directions) == 2 and not hasattr(ax, "flat"):
        for label in dict.fromkeys(lbl for _, lbl in refs):
            xs = [t.values[0] for t, lbl in refs if lbl == label]
            ys = [t.values[1] for t, lbl in refs if lbl == label]
            ax.scatter(xs, ys, s=160, facecolors="none", edgecolors="k", linewidths=1.5, label=label, zorder=5)
        ax.legend(loc="best", fontsize="small")
    return ax


def study_plots(study: optuna.Study, metrics: list[str], out: Path) -> list[Path]:
    """The study's plots as PNGs (a plot that cannot be drawn yet is skipped with a log line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    names = [m.replace("/", "_") for m in metrics]
    plots = {"pareto_front": lambda: _mark_references(study, ovm.plot_pareto_front(study, target_names=metrics))}
    plots = plots if len(metrics) > 1 else {}
    for i, (metric, name) in enumerate(zip(metrics, names, strict=True)):
        suffix = "" if len(metrics) == 1 else f"_{name}"
        target = None if len(metrics) == 1 else (lambda t, i=i: t.values[i])
        plots[f"optimization_history{suffix}"] = lambda target=target, metric=metric: ovm.plot_optimization_history(
            study, target=target, target_name=metric
        )
        plots[f"param_importances{suffix}"] = lambda target=target, metric=metric: ovm.plot_param_importances(
            study, target=target, target_name=metric
        )
        plots[f"parallel_coordinate{suffix}"] = lambda target=target, metric=metric: ovm.plot_parallel_coordinate(
            study, target=target, target_name=metric
        )
    written = []
    for name, draw in plots.items():
        open_before = set(plt.get_fignums())
        try:
            with warnings.catch_warnings():  # optuna's matplotlib backend is marked experimental
                warnings.simplefilter("ignore")
                ax = draw()
                fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
                fig.set_size_inches(8, 5)
                path = out / f"{name}.png"
                fig.savefig(path, dpi=100, bbox_inches="tight")
            written.append(path)
        except Exception as err:  # e.g. importances need two complete trials
            log.warning("sweep plot %s skipped: %s", name, err)
        finally:  # optuna draws through pyplot: close every figure it opened, also when it failed half-way
            for number in set(plt.get_fignums()) - open_before:
                plt.close(number)
    return written
