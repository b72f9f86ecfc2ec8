"""Re-opened runs (``calolab evaluate/export run_id=...``) keep their status and end time; a
failed, interrupted or killed re-evaluation is recorded beside the run, never as its status."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import mlflow
import pytest

from calolab.errors import CalolabError
from calolab.keys import (
    ERROR_TAG,
    REEVALUATION_ERROR_ARTIFACT,
    REEVALUATION_ERROR_TAG,
    REOPENED_STATUS_TAG,
)
from calolab.tracking import RunNotFoundError, TrackedRun, TrackingStore


def finished_run(store: TrackingStore) -> str:
    with TrackedRun(store, "reopen") as run:
        mlflow.log_metric("test/auc", 0.9)
    return run.run_id


def artifacts(store: TrackingStore, run_id: str) -> set[str]:
    return {a.path for a in store.client().list_artifacts(run_id)}


def test_failed_reevaluation_leaves_the_run_finished(store):
    run_id = finished_run(store)
    before = store.client().get_run(run_id).info
    with pytest.raises(CalolabError, match="data files are gone"), TrackedRun(store, run_id=run_id):
        mlflow.log_metric("test/auc", 0.8)  # logged before the failure: kept, as the history shows
        raise CalolabError("data files are gone")
    run = store.client().get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.end_time == before.end_time
    assert run.data.tags[REEVALUATION_ERROR_TAG] == "CalolabError: data files are gone"
    assert ERROR_TAG not in run.data.tags and REOPENED_STATUS_TAG not in run.data.tags
    assert {REEVALUATION_ERROR_ARTIFACT} <= artifacts(store, run_id) and "error.txt" not in artifacts(store, run_id)
    text = mlflow.artifacts.load_text(f"runs:/{run_id}/{REEVALUATION_ERROR_ARTIFACT}")
    assert "Traceback" in text and "data files are gone" in text
    assert [m.value for m in store.client().get_metric_history(run_id, "test/auc")] == [0.9, 0.8]


def test_interrupted_reevaluation_leaves_the_run_finished(store):
    run_id = finished_run(store)
    with pytest.raises(KeyboardInterrupt), TrackedRun(store, run_id=run_id):
        raise KeyboardInterrupt
    run = store.client().get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags[REEVALUATION_ERROR_TAG] == "KeyboardInterrupt"


def test_successful_reevaluation_keeps_status_and_clears_an_old_failure(store):
    run_id = finished_run(store)
    end_time = store.client().get_run(run_id).info.end_time
    with pytest.raises(ValueError), TrackedRun(store, run_id=run_id):
        raise ValueError("first try")
    with TrackedRun(store, run_id=run_id) as run:
        assert mlflow.active_run().info.run_id == run_id and run.experiment == "reopen"
        mlflow.log_metric("test/auc", 0.95)
    got = store.client().get_run(run_id)
    assert got.info.status == "FINISHED" and got.info.end_time == end_time
    assert REEVALUATION_ERROR_TAG not in got.data.tags and got.data.metrics["test/auc"] == 0.95


def test_a_failed_training_stays_failed(store):
    with pytest.raises(RuntimeError), TrackedRun(store, "reopen") as run:
        raise RuntimeError("training broke")
    with TrackedRun(store, run_id=run.run_id):
        pass
    got = store.client().get_run(run.run_id)
    assert got.info.status == "FAILED" and got.data.tags[ERROR_TAG] == "RuntimeError: training broke"


def test_an_unknown_run_is_one_clear_error(store):
    with pytest.raises(RunNotFoundError, match="no MLflow run 'deadbeef' in sqlite:///"):
        with TrackedRun(store, run_id="deadbeef"):
            pass
    assert mlflow.active_run() is None


def reopen_in_child(store: TrackingStore, run_id: str, body: str) -> subprocess.CompletedProcess:
    """Re-open ``run_id`` in a fresh Python process and run ``body`` inside (what the CLI does)."""
    code = textwrap.dedent(
        f"""
        import os, signal
        from calolab.tracking import TrackedRun, TrackingStore
        from calolab.tracking.run import sigterm_as_interrupt
        store = TrackingStore({store.uri!r}, {store.artifact_root!r})
        with sigterm_as_interrupt(), TrackedRun(store, run_id={run_id!r}):
            {body}
        """
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_sigterm_is_an_interruption_that_keeps_the_status(store):
    run_id = finished_run(store)
    res = reopen_in_child(store, run_id, "os.kill(os.getpid(), signal.SIGTERM)")
    assert res.returncode != 0 and "KeyboardInterrupt" in res.stderr
    run = store.client().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[REEVALUATION_ERROR_TAG] == f"KeyboardInterrupt: terminated by signal {int(signal.SIGTERM)}"


def test_a_killed_reevaluation_is_repaired_by_the_next(store):
    run_id = finished_run(store)
    end_time = store.client().get_run(run_id).info.end_time
    res = reopen_in_child(store, run_id, "os.kill(os.getpid(), signal.SIGKILL)")
    assert res.returncode == -signal.SIGKILL
    left = store.client().get_run(run_id)
    assert left.info.status == "RUNNING" and left.data.tags[REOPENED_STATUS_TAG] == "FINISHED"
    with TrackedRun(store, run_id=run_id):
        pass
    got = store.client().get_run(run_id)
    assert got.info.status == "FINISHED" and got.info.end_time == end_time
    assert REOPENED_STATUS_TAG not in got.data.tags


def test_a_run_does_not_leave_its_store_in_the_environment(store, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    finished_run(store)
    assert "MLFLOW_TRACKING_URI" not in os.environ
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/mlflow.db")
    finished_run(store)
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:////elsewhere/mlflow.db"
