"""Issue 13: a sweep worker stopped by SIGTERM in the middle of a trial (a batch system's time
limit). The trial's training logs its checkpoint and ends its MLflow run KILLED, the Optuna trial is
FAIL with the interruption as its reason and queued again with the same parameters (a WAITING trial
with Optuna's retry attributes), and the worker exits 143. That the next worker runs such a queued
retry to COMPLETE is tests/sweeps/test_killed_worker.py's check (the same retry callback); not
repeated here to keep the suite's time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from calolab import keys
from calolab.app import ROOT_DIR
from sweeps.storage import open_storage
from tests.conftest import SMOKE_CHUNK, SMOKE_EVENTS

pytestmark = pytest.mark.slow


def _worker(root: Path, data: Path, study: str, n_trials: int, epochs: int) -> subprocess.Popen:
    args = [
        "-m",
        "experiment=photon_id",
        "debug=smoke",
        "sweep=photon_id",
        f"paths.data_dir={data}",
        f"paths.log_dir={root / 'logs'}",
        f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
        f"generate.n_events={SMOKE_EVENTS}",
        f"generate.chunk_size={SMOKE_CHUNK}",
        "tracking.log_models=false",
        f"hydra.sweeper.study_name={study}",
        "hydra.sweeper.pruner=none",
        f"hydra.sweeper.n_trials={n_trials}",
        f"trainer.max_epochs={epochs}",
        "callbacks.early_stopping.patience=1000",
    ]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    exe = Path(sys.executable).with_name("calolab")
    return subprocess.Popen(
        [str(exe), "train", *args], cwd=ROOT_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def test_interrupted_trial_is_failed_and_queued_again(smoke_data, tmp_path):
    study_name = f"preempt-{uuid.uuid4().hex[:6]}"
    storage = str(tmp_path / "logs/train/sweeps" / study_name / "optuna.journal")
    doomed = _worker(tmp_path, smoke_data, study_name, n_trials=2, epochs=500)  # longer than the test waits
    deadline = time.monotonic() + 300
    while True:
        assert doomed.poll() is None, doomed.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "no trial trained an epoch within 300 s"
        try:
            trials = optuna.load_study(study_name=study_name, storage=open_storage(storage)).get_trials()
        except KeyError:  # no study yet
            trials = []
        if trials and trials[0].state == TrialState.RUNNING and trials[0].user_attrs.get("calolab.epochs", 0) >= 1:
            break
        time.sleep(0.5)
    doomed.send_signal(signal.SIGTERM)
    _, err = doomed.communicate(timeout=300)
    assert doomed.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "sweep trial 0 failed and queued again as trial 1" in err

    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    first, retry = study.get_trials()
    assert first.state == TrialState.FAIL
    assert first.user_attrs["fail_reason"].startswith("interrupted by SIGTERM at epoch ")
    assert retry.state == TrialState.WAITING and retry.params == first.params
    assert retry.system_attrs["failed_trial"] == 0
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    killed = client.get_run(first.user_attrs["mlflow_run_id"])
    assert killed.info.status == "KILLED"
    assert killed.data.tags["optuna.state"] == "FAIL"
    assert killed.data.tags[keys.INTERRUPTED_TAG] in first.user_attrs["fail_reason"]
    assert keys.LAST_CHECKPOINT in {a.path for a in client.list_artifacts(killed.info.run_id, keys.CHECKPOINT_DIR)}
