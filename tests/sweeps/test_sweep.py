"""``calolab train -m ... sweep=...`` end to end in smoke mode: real trials, pruning, resume,
failures, multi-objective, and the MLflow parent/child runs (one shared small sample)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from sweeps.storage import open_storage
from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def sweep_args(root: Path, *extra: str) -> list[str]:
    return [
        "-m",
        "experiment=photon_id",
        "debug=smoke",
        f"paths.data_dir={root / 'data'}",
        f"paths.log_dir={root / 'logs'}",
        f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
        "generate.n_events=240",
        "generate.chunk_size=120",
        "tracking.log_models=false",
        *extra,
    ]


# val/loss, not val/auc: on the smoke sample val/auc saturates at 1.0 and no trial is worse
PRUNING = [
    "sweep=photon_id",
    "hydra.sweeper.metric=val/loss",
    "hydra.sweeper.direction=minimize",
    "hydra.sweeper.sampler=random",
    "hydra.sweeper.pruner_options.median.n_startup_trials=2",
    "hydra.sweeper.pruner_options.median.n_warmup_steps=0",
    "trainer.max_epochs=4",
    "callbacks.early_stopping.patience=10",
]


def sweep_ok(root: Path, *extra: str, timeout: float = 600):
    """``calolab train -m`` with the smoke arguments and ``extra``; it must succeed."""
    res = run_cli("train", *sweep_args(root, *extra), timeout=timeout)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def load(root: Path, name: str) -> optuna.Study:
    return optuna.load_study(
        study_name=name, storage=open_storage(str(root / "logs/train/sweeps" / name / "optuna.journal"))
    )


def runs(root: Path, study: str) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("photon_id")
    return [
        r
        for r in client.search_runs([exp.experiment_id], max_results=1000)
        if r.data.tags.get("optuna.study_name") == study
    ]


@pytest.fixture(scope="module")
def pruned_sweep(tmp_path_factory):
    """Six trials with median pruning (generating the small sample on the way)."""
    root = tmp_path_factory.mktemp("sweep")
    sweep_ok(root, *PRUNING, "hydra.sweeper.n_trials=6", "hydra.sweeper.seed=3")
    return root


def test_six_trials_with_pruning(pruned_sweep):
    study = load(pruned_sweep, "photon_id")
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(6))
    states = [t.state for t in trials]
    assert states.count(TrialState.PRUNED) >= 1, states
    assert states.count(TrialState.COMPLETE) >= 2, states
    for t in trials:
        epochs = t.user_attrs["calolab.epochs"]
        if t.state == TrialState.PRUNED:
            assert epochs < 4 and len(t.intermediate_values) == epochs
        else:
            assert epochs == 4 and t.value == min(t.intermediate_values.values())


def test_pruning_in_trials_run_by_another_launcher(pruned_sweep):
    """submitit's local launcher (the SLURM launcher's twin) runs each trial in its own process,
    two at a time: each process re-attaches its trial from the journal, reports per epoch and
    is pruned there."""
    res = sweep_ok(
        pruned_sweep,
        *PRUNING,
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=20",
        "hydra.sweeper.study_name=submitit",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.seed=3",
        timeout=900,
    )
    assert "Error executing job" not in res.stdout + res.stderr  # a pruned trial is no error
    trials = load(pruned_sweep, "submitit").get_trials()
    sweeper = {t.user_attrs["calolab.worker"] for t in trials}
    processes = {t.user_attrs["calolab.trial_process"] for t in trials}
    assert len(sweeper) == 1 and len(processes) == 6 and not processes & sweeper
    states = [t.state for t in trials]
    assert TrialState.PRUNED in states and TrialState.COMPLETE in states, states
    for t in trials:
        assert len(t.intermediate_values) == t.user_attrs["calolab.epochs"]
        assert (t.user_attrs["calolab.epochs"] < 4) == (t.state == TrialState.PRUNED)


def test_parent_and_child_runs(pruned_sweep):
    client = MlflowClient(tracking_uri=f"sqlite:///{pruned_sweep / 'mlflow.db'}")
    all_runs = runs(pruned_sweep, "photon_id")
    parents = [r for r in all_runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in all_runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 6
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    study = load(pruned_sweep, "photon_id")
    by_number = {int(c.data.tags["optuna.trial_number"]): c for c in children}
    for t in study.get_trials():
        child = by_number[t.number]
        assert child.data.tags["optuna.state"] == t.state.name
        assert child.info.status == {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}[t.state.name]
        assert "sweep_trial.storage" not in child.data.params  # the storage URL may hold credentials
    assert parent.data.metrics["best/val/loss"] == pytest.approx(study.best_value)
    assert parent.data.metrics["sweep/n_pruned"] >= 1
    assert float(parent.data.params["best.model.optimizer.lr"]) == pytest.approx(
        study.best_params["model.optimizer.lr"]
    )
    plots = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"optimization_history.png", "param_importances.png", "parallel_coordinate.png"} <= plots


def test_same_command_resumes_the_study(pruned_sweep):
    sweep_ok(pruned_sweep, *PRUNING, "hydra.sweeper.n_trials=2", "trainer.max_epochs=2")
    study = load(pruned_sweep, "photon_id")
    assert [t.number for t in study.get_trials()] == list(range(8))
    assert len([r for r in runs(pruned_sweep, "photon_id") if "mlflow.parentRunId" not in r.data.tags]) == 2


def test_search_space_from_the_command_line(pruned_sweep):
    """Stock-plugin syntax on the command line: a sweep override replaces or adds a dimension, a
    plain override of a searched path fixes it."""
    sweep_ok(
        pruned_sweep,
        "sweep=photon_id",
        "hydra.sweeper.study_name=cli",
        "hydra.sweeper.n_trials=2",
        "trainer.max_epochs=1",
        "model.optimizer.lr=tag(log, interval(1e-4, 1e-3))",
        "net.dense=[64],[32,16]",
        "net.dropout=0.125",
    )
    trials = load(pruned_sweep, "cli").get_trials()
    assert len(trials) == 2
    for t in trials:
        assert set(t.params) == {"model.optimizer.lr", "data.batch_size", "net.dense"}
        assert 1e-4 <= t.params["model.optimizer.lr"] <= 1e-3
        assert t.params["net.dense"] in ("[64]", "[32,16]")
    children = [r for r in runs(pruned_sweep, "cli") if "mlflow.parentRunId" in r.data.tags]
    assert {c.data.params["net.dropout"] for c in children} == {"0.125"}
    assert {c.data.params["net.dense"] for c in children} <= {"[64]", "[32, 16]"}


def test_conditional_search_space(pruned_sweep):
    """The optimiser preset: momentum and nesterov exist only in the SGD trials, in Optuna and in
    the trained config (MLflow params)."""
    sweep_ok(
        pruned_sweep,
        "sweep=photon_id_optimizer",
        "hydra.sweeper.sampler=random",
        "hydra.sweeper.seed=1",
        "hydra.sweeper.n_trials=4",
        "trainer.max_epochs=1",
    )
    trials = load(pruned_sweep, "photon_id_optimizer").get_trials()
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    optimizers = {t.number: t.params["model.optimizer._target_"] for t in trials}
    assert set(optimizers.values()) == {"torch.optim.Adam", "torch.optim.SGD"}
    for t in trials:
        sgd = optimizers[t.number] == "torch.optim.SGD"
        assert ({"model.optimizer.momentum", "model.optimizer.nesterov"} <= set(t.params)) == sgd
        assert ("model.optimizer.momentum" in t.params) == sgd
    for child in (r for r in runs(pruned_sweep, "photon_id_optimizer") if "mlflow.parentRunId" in r.data.tags):
        sgd = optimizers[int(child.data.tags["optuna.trial_number"])] == "torch.optim.SGD"
        assert ("model.optimizer.momentum" in child.data.params) == sgd


def test_failing_trials_are_fail_until_the_failure_rate(pruned_sweep):
    """export.atol=-1 fails the ONNX parity check of every trial: each is FAIL with its reason,
    the sweep goes on past the first, and stops once more than 50% of n_trials=3 failed."""
    res = run_cli(
        "train",
        *sweep_args(
            pruned_sweep,
            "sweep=photon_id",
            "hydra.sweeper.study_name=failing",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.max_failure_rate=0.5",
            "trainer.max_epochs=1",
            "export.atol=-1",
            "export.rtol=0",
        ),
        timeout=600,
    )
    assert res.returncode != 0
    assert "calolab train: error: study failing: 2 of 2 trials failed" in res.stderr, res.stderr[-3000:]
    assert "parity" in res.stderr
    trials = load(pruned_sweep, "failing").get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    assert all("parity" in t.user_attrs["fail_reason"] for t in trials)
    children = [r for r in runs(pruned_sweep, "failing") if "mlflow.parentRunId" in r.data.tags]
    assert sorted(c.info.status for c in children) == ["FAILED", "FAILED"]
    assert all(c.data.tags["optuna.state"] == "FAIL" and "parity" in c.data.tags["calolab.error"] for c in children)
    parent = next(r for r in runs(pruned_sweep, "failing") if "mlflow.parentRunId" not in r.data.tags)
    assert parent.info.status == "FAILED"


def test_multi_objective(pruned_sweep):
    sweep_ok(pruned_sweep, "sweep=photon_id_multi", "hydra.sweeper.n_trials=3", "trainer.max_epochs=1")
    study = load(pruned_sweep, "photon_id_multi")
    trials = study.get_trials()
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    assert all(len(t.values) == 2 and t.values[1] > 1000 for t in trials)  # (val/auc, parameter count)
    client = MlflowClient(tracking_uri=f"sqlite:///{pruned_sweep / 'mlflow.db'}")
    parent = next(r for r in runs(pruned_sweep, "photon_id_multi") if "mlflow.parentRunId" not in r.data.tags)
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "pareto_front.json" in names
    plots = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "pareto_front.png" in plots
    assert parent.data.metrics["sweep/n_pareto"] == len(study.best_trials)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["hydra.sweeper.sampler=tpee"], "unknown sampler 'tpee'"),
        (["hydra.sweeper.pruner=medain"], "unknown pruner 'medain'"),
        (["~net.dropout"], "unknown parameter path 'net.dropout'"),  # the search space names a key the config lacks
        (["hydra.sweeper.direction=maximise"], "must be maximize or minimize"),
        (["hydra.sweeper.storage=postgresql://postgres@127.0.0.1:1/nowhere"], "cannot open postgresql://"),
        (["model.optimizer.lr=interval(1e-2,1e-4)"], "inverted range"),  # command-line search dimensions
        (["model.optimizer.lrr=choice(1e-3,1e-4)"], "unknown parameter path 'model.optimizer.lrr'"),
        (["net.dropout=tag(linear, interval(0,0.2))"], "the only tag an interval takes is 'log'"),
    ],
)
def test_bad_input_fails_before_any_trial(tmp_path, args, message):
    res = run_cli("train", *sweep_args(tmp_path, "sweep=photon_id", *args), timeout=120)
    assert res.returncode != 0
    errors = [line for line in res.stderr.splitlines() if line.startswith("calolab train: error:")]
    assert len(errors) == 1 and message in errors[0], res.stderr[-2000:]
    assert not (tmp_path / "mlflow.db").exists() or not runs(tmp_path, "photon_id")
    assert not (tmp_path / "data").exists(), "no trial started (no sample generated)"
