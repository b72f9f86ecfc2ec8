"""Issue 12: DDP jobs inside a Hydra multirun / Optuna sweep (two gloo ranks on CPU).

Lightning's launcher starts the other rank by re-running the command; inside a multirun that
command must be the job alone (not ``-m`` and the whole sweep again), and each job starts its own
ranks (the previous job's process group is gone). A DDP sweep of two trials, each pruned by the
main process at its first epoch: both ranks stop at that epoch (none is left waiting in a
collective), each trial is PRUNED in Optuna and its run KILLED with ``optuna.state=PRUNED``.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from calolab.app import single_run_argv
from tests.conftest import run_cli, smoke_args
from tests.test_12_ddp import TIMEOUT, wait_no_process


def test_single_run_argv_keeps_the_job_alone():
    argv = ["calolab train", "-m", "--config-dir", "/mine", "seed=1,2", "trainer=ddp", "-cn", "train"]
    task = ["seed=2", "trainer=ddp", "+sweep_trial.number=3"]
    hydra = ["hydra.sweep.dir=/x", "hydra.searchpath=[file:///extra]"]
    assert single_run_argv(argv, task, hydra) == [
        "calolab train",
        "--config-dir",
        "/mine",
        "-cn",
        "train",
        "seed=2",
        "trainer=ddp",
        "+sweep_trial.number=3",
        "hydra.searchpath=[file:///extra]",
    ]


def ddp_multirun_args(data_dir: Path, root: Path, *extra: str) -> list[str]:
    return [
        "-m",
        *smoke_args(
            data_dir,
            f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
            f"paths.log_dir={root / 'logs'}",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.enable_progress_bar=false",
            "tracking.log_models=false",
            *extra,
        ),
    ]


def runs_of(root: Path, experiment: str = "photon_id"):
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return client, (client.search_runs([exp.experiment_id]) if exp is not None else [])


@pytest.mark.slow
def test_ddp_sweep_trials_pruned_on_every_rank(smoke_data, tmp_path):
    """A threshold pruner no trial can pass: in each of two DDP trials the main process prunes at
    epoch 0 of 3, and both ranks stop."""
    args = ddp_multirun_args(
        smoke_data,
        tmp_path,
        "sweep=photon_id",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.pruner=threshold",
        "+hydra.sweeper.pruner_options.threshold.lower=2.0",  # an AUC is never above 1
        "trainer.max_epochs=3",
    )
    res = run_cli("train", *args, timeout=TIMEOUT)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    assert out.count("MEMBER: 2/2") == 2, out[-6000:]  # each trial's own second rank joined
    journal = tmp_path / "logs" / "train" / "sweeps" / "photon_id" / "optuna.journal"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    trials = optuna.load_study(study_name="photon_id", storage=storage).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.PRUNED] * 2, trials
    assert [t.user_attrs["calolab.epochs"] for t in trials] == [1, 1]
    client, runs = runs_of(tmp_path)
    children = [r for r in runs if "optuna.trial_number" in r.data.tags]
    assert len(children) == 2, [(r.info.run_name, r.info.status) for r in runs]
    for child in children:
        assert child.info.status == "KILLED" and child.data.tags["optuna.state"] == "PRUNED"
        assert "calolab.error" not in child.data.tags  # the other rank did not record its stop as a failure
        assert len(client.get_metric_history(child.info.run_id, "val/auc")) == 1  # both ranks stopped at epoch 0
    assert wait_no_process(str(tmp_path / "mlflow.db")) == []
