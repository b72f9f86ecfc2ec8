"""Which run is promoted: the one named, the best trial of a sweep, or the experiment's best run.

A candidate must be a finished calolab training of the experiment, tagged with its dataset
digest, with an ONNX model logged as the MLflow-3 LoggedModel ``onnx`` (what gets registered, so
that ``models:/<name>@champion`` loads with ``mlflow.onnx`` and onnxruntime). Its PyTorch
LoggedModel ``pytorch`` is recorded when there is one. Everything here only reads the tracking
store: a bad candidate is refused before the registry is touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from calolab import keys
from calolab.errors import ConfigError, suggest
from calolab.registry.errors import RegistryError
from calolab.tracking import scrub_uri

#: Tag of a sweep's trial runs naming their Optuna study.
STUDY_TAG = "optuna.study_name"
#: Tag calolab sets on its own bookkeeping runs (promotion reports); never a candidate.
KIND_TAG = "calolab.kind"
DIGEST_TAG = keys.DATASET_DIGEST_TAG
ONNX_MODEL = "onnx"
PYTORCH_MODEL = "pytorch"


@dataclass(frozen=True)
class Candidate:
    """The run to promote and its logged models.

    Attributes:
        run: the MLflow run.
        experiment: its experiment's name.
        onnx_model: the LoggedModel ``onnx`` of the run (what is registered).
        pytorch_model: the LoggedModel ``pytorch``, or None when the run has none.
        selected_by: how the run was chosen, for the record.
    """

    run: object
    experiment: str
    onnx_model: object
    pytorch_model: object | None
    selected_by: str

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    @property
    def digest(self) -> str:
        return self.run.data.tags[DIGEST_TAG]


def find_experiment(client, name: str, uri: str):
    """The active MLflow experiment ``name``, or a RegistryError naming the close matches."""
    exp = client.get_experiment_by_name(name)
    if exp is None or exp.lifecycle_stage == "deleted":
        names = [e.name for e in client.search_experiments()]
        raise RegistryError(
            f"no MLflow experiment {name!r} in {scrub_uri(uri)}{suggest(name, names)}"
            + (f" (experiments: {', '.join(sorted(names))})" if names else "")
        )
    return exp


def _metric_value(run, metric: str) -> float | None:
    value = run.data.metrics.get(metric)
    return value if value is not None and math.isfinite(value) else None


def _best(runs: list, metric: str, mode: str, what: str):
    usable = [r for r in runs if _metric_value(r, metric) is not None and r.data.tags.get(KIND_TAG) is None]
    usable = [r for r in usable if DIGEST_TAG in r.data.tags]
    if not usable:
        raise RegistryError(f"no finished training run with a {metric!r} metric among {what}")
    sign = 1.0 if mode == "max" else -1.0
    # best metric first; ties go to the newer run
    return max(usable, key=lambda r: (sign * _metric_value(r, metric), r.info.start_time or 0))


def _search_finished(client, experiment_id: str, extra: str = "") -> list:
    query = "attributes.status = 'FINISHED'" + (f" and {extra}" if extra else "")
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=query, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def select_run(client, experiment, uri: str, *, run_id: str | None, study: str | None, metric: str, mode: str):
    """The candidate run and how it was chosen (``run_id``, best of ``study``, or best of all)."""
    from mlflow.exceptions import MlflowException

    if run_id is not None and study is not None:
        raise ConfigError(f"give run_id or sweep, not both (got run_id={run_id!r}, sweep={study!r})")
    if run_id is not None:
        try:
            run = client.get_run(run_id)
        except MlflowException as err:
            raise RegistryError(f"no MLflow run {run_id!r} in {scrub_uri(uri)}") from err
        if run.info.experiment_id != experiment.experiment_id:
            other = client.get_experiment(run.info.experiment_id).name
            raise RegistryError(f"run {run_id} belongs to experiment {other!r}, not {experiment.name!r}")
        return run, f"run_id={run_id}"
    if study is not None:
        quoted = str(study).replace("'", "\\'")
        runs = _search_finished(client, experiment.experiment_id, f"tags.`{STUDY_TAG}` = '{quoted}'")
        if not runs:
            raise RegistryError(
                f"no finished run tagged {STUDY_TAG}={study!r} in experiment {experiment.name!r} "
                f"(is {study!r} the Optuna study name of a sweep of this experiment?)"
            )
        run = _best(runs, metric, mode, f"the {len(runs)} finished trial(s) of study {study!r}")
        return run, f"best {metric} ({mode}) of sweep {study}"
    runs = _search_finished(client, experiment.experiment_id)
    run = _best(runs, metric, mode, f"the {len(runs)} finished run(s) of experiment {experiment.name!r}")
    return run, f"best {metric} ({mode}) of experiment {experiment.name}"


def logged_models(client, run) -> dict[str, object]:
    """The run's READY LoggedModels by name (the newest when a name was logged twice)."""
    outputs = getattr(run, "outputs", None)
    ids = [o.model_id for o in (outputs.model_outputs if outputs else [])]
    by_name: dict[str, object] = {}
    for model_id in ids:
        model = client.get_logged_model(model_id)
        if "READY" not in str(model.status):
            continue
        kept = by_name.get(model.name)
        if kept is None or (model.creation_timestamp or 0) > (kept.creation_timestamp or 0):
            by_name[model.name] = model
    return by_name


def select_candidate(
    client, experiment_name: str, uri: str, *, run_id: str | None, study: str | None, metric: str, mode: str
) -> Candidate:
    """Find and check the candidate run; raises RegistryError with what is wrong."""
    experiment = find_experiment(client, experiment_name, uri)
    run, selected_by = select_run(client, experiment, uri, run_id=run_id, study=study, metric=metric, mode=mode)
    rid = run.info.run_id
    if run.data.tags.get(KIND_TAG) is not None:
        raise RegistryError(f"run {rid} is a calolab {run.data.tags[KIND_TAG]} run, not a training")
    if run.info.status != "FINISHED":
        raise RegistryError(f"run {rid} is {run.info.status}: only FINISHED trainings can be promoted")
    if DIGEST_TAG not in run.data.tags:
        raise RegistryError(f"run {rid} has no {DIGEST_TAG!r} tag: not a calolab training, its test set is unknown")
    models = logged_models(client, run)
    if ONNX_MODEL not in models:
        found = f" (it has: {', '.join(sorted(models))})" if models else ""
        raise RegistryError(
            f"run {rid} has no ONNX model: expected a logged model named {ONNX_MODEL!r}{found}; "
            f"was it trained with tracking.log_models=false?"
        )
    return Candidate(
        run=run,
        experiment=experiment.name,
        onnx_model=models[ONNX_MODEL],
        pytorch_model=models.get(PYTORCH_MODEL),
        selected_by=selected_by,
    )
