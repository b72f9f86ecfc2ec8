"""A sweep worker killed (SIGKILL) in the middle of a trial: the next worker on the same study
fails the orphaned RUNNING trial with the reason, runs it again with the same parameters, and
closes the dead worker's MLflow runs as FAILED. Once with the default journal file (the dead
worker is found by its PID) and once with PostgreSQL (found by its missing heartbeat; the session's
``postgres_url`` server, never skipped)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from optuna.trial import TrialState

from calolab.app import ROOT_DIR, compose_config
from calolab.pipeline.samples import ensure_sample
from calolab.tracking import TrackingStore
from sweeps.storage import open_storage
from tests.sweeps.test_sweep import sweep_args

pytestmark = pytest.mark.slow


def _start(args: list[str]) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("calolab")
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.Popen(
        [str(exe), "train", *args],
        cwd=ROOT_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: SIGKILL reaches the whole worker
    )


def _wait_for_running_trial(storage_spec: str, study_name: str, worker: subprocess.Popen, timeout: float = 300):
    """The first trial once it is RUNNING, tracked in MLflow and past its first epoch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.poll() is None, f"the worker ended early: {worker.stderr.read()[-3000:]}"
        try:
            study = optuna.load_study(study_name=study_name, storage=open_storage(storage_spec))
        except KeyError:  # the study does not exist yet
            study = None
        if study is not None:
            trials = study.get_trials(deepcopy=False)
            if trials and trials[0].state == TrialState.RUNNING and trials[0].user_attrs.get("calolab.epochs", 0) >= 1:
                return trials[0]
        time.sleep(1)
    raise AssertionError(f"no trial ran within {timeout} s")


@pytest.mark.parametrize("kind", ["journal", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_killed_worker_trial_is_failed_and_retried(tmp_path, kind, request):
    study_name = f"kill-{kind}-{uuid.uuid4().hex[:6]}"
    if kind == "postgres":
        storage, _ = request.getfixturevalue("pg_storage")
        extra = ["hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=3"]
        reason = "no heartbeat for over 3 s"
    else:
        storage = str(tmp_path / "logs/train/sweeps" / study_name / "optuna.journal")
        extra = []
        reason = "its process is gone"
    cfg = compose_config("train", [a for a in sweep_args(tmp_path) if a != "-m"])
    ensure_sample(OmegaConf.to_container(cfg.generate, resolve=True))
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    TrackingStore.resolve(tracking, tmp_path).experiment_id("photon_id")

    def args(n_trials: int, epochs: int) -> list[str]:
        return sweep_args(
            tmp_path,
            "sweep=photon_id",
            f"hydra.sweeper.study_name={study_name}",
            f"hydra.sweeper.storage='{storage}'",
            "hydra.sweeper.pruner=none",
            f"hydra.sweeper.n_trials={n_trials}",
            f"trainer.max_epochs={epochs}",
            "callbacks.early_stopping.patience=1000",
            *extra,
        )

    doomed = _start(args(2, 500))  # a trial far longer than the test waits
    try:
        orphan = _wait_for_running_trial(storage, study_name, doomed)
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=30)
    finally:
        if doomed.poll() is None:
            os.killpg(doomed.pid, signal.SIGKILL)
        doomed.stderr.close()
    if kind == "postgres":
        time.sleep(4)  # past the grace period

    survivor = _start(args(1, 1))
    _, err = survivor.communicate(timeout=600)
    assert survivor.returncode == 0, err[-3000:]

    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    first, retry = study.get_trials()
    assert first.number == orphan.number == 0
    assert first.state == TrialState.FAIL
    assert first.user_attrs["fail_reason"] == f"worker {socket.gethostname()}:{doomed.pid} died: {reason}"
    assert retry.state == TrialState.COMPLETE
    assert retry.params == first.params
    assert retry.system_attrs["failed_trial"] == 0
    assert retry.user_attrs["calolab.worker"] == f"{socket.gethostname()}:{survivor.pid}"

    client = MlflowClient(tracking_uri=tracking)
    dead_child = client.get_run(first.user_attrs["mlflow_run_id"])
    assert dead_child.info.status == "FAILED"
    assert dead_child.data.tags["optuna.state"] == "FAIL"
    assert reason in dead_child.data.tags["calolab.error"]
    dead_parent = client.get_run(first.user_attrs["calolab.parent_run_id"])
    assert dead_parent.info.status == "FAILED"
    assert dead_parent.data.tags["calolab.sweep.worker"].endswith(f":{doomed.pid}")
    assert client.get_run(retry.user_attrs["mlflow_run_id"]).info.status == "FINISHED"
    assert client.get_run(retry.user_attrs["calolab.parent_run_id"]).info.status == "FINISHED"
