"""Issue 13: preemption and resume with real processes, real signals and a real MLflow store.

Two 5-epoch smoke trainings (``calolab train`` subprocesses on the session's smoke sample), each
signalled once its epoch-2 checkpoint is in the run:

- SIGTERM: the run ends KILLED with the signal and the epoch/step in a tag and its checkpoint
  logged, exit 143; a resume that changes the learning rate is refused in one line; ``calolab train
  resume=<run_id>`` finishes the same run (epochs 0-4 logged once each, test metrics, ONNX model);
  a second resume of the FINISHED run is refused.
- SIGKILL inside a SLURM job (``SLURM_JOB_ID``): the run is left RUNNING with a dead PID; the
  requeued job (same command, ``SLURM_RESTART_COUNT=1``) resumes it by itself, gets SIGUSR1
  (``sbatch --signal=USR1@...``) an epoch later, ends it KILLED and calls ``scontrol requeue`` (a
  recording ``scontrol`` on PATH stands in for SLURM, which this machine lacks); the next restart
  finishes the run with no step logged twice.

A RUNNING run whose training process is alive cannot be resumed (checked while the first training
runs), nor one of another host with a fresh heartbeat; a FINISHED run cannot be resumed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from calolab import keys
from calolab.app import ROOT_DIR
from calolab.tracking import TrackedRun, TrackingStore
from tests.conftest import run_cli, smoke_args

pytestmark = pytest.mark.slow

EPOCHS = 5


def _args(data: Path, db: Path, *extra: str) -> list[str]:
    return [*smoke_args(data, f"tracking.uri=sqlite:///{db}", f"trainer.max_epochs={EPOCHS}"), *extra]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR" and not k.startswith("SLURM_")}
    return {**env, **extra}


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("calolab")
    return subprocess.Popen(
        [str(exe), "train", *args], cwd=ROOT_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def _signal_after(
    proc: subprocess.Popen, client: MlflowClient, sig: int, epochs: int, while_alive=None, timeout: float = 300
) -> str:
    """Send ``sig`` to ``proc`` once its run holds a checkpoint of ``epochs`` complete epochs (first
    calling ``while_alive(run)``, when given, on the live run); the run id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the training ended before it was signalled: {proc.stderr.read()[-3000:]}"
        exp = client.get_experiment_by_name("photon_id")
        runs = (
            client.search_runs([exp.experiment_id], filter_string=f"tags.`{keys.PID_TAG}` = '{proc.pid}'")
            if exp
            else []
        )
        if runs and while_alive is not None:
            while_alive(runs[0])
            while_alive = None
        if runs and int(runs[0].data.tags.get(keys.CHECKPOINT_EPOCHS_TAG, "0")) >= epochs:
            proc.send_signal(sig)
            return runs[0].info.run_id
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"no checkpoint of {epochs} epochs within {timeout} s")


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def _assert_complete(client: MlflowClient, run_id: str) -> None:
    """FINISHED, each epoch's metrics logged once at increasing steps, test metrics present."""
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED", run.data.tags.get(keys.ERROR_TAG)
    assert keys.ERROR_TAG not in run.data.tags
    for key in (keys.VAL_AUC, keys.TRAIN_LOSS):
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert len(steps) == EPOCHS and steps == sorted(set(steps)), (key, steps)
    epochs = {m.step: m.value for m in client.get_metric_history(run_id, "epoch")}
    assert sorted(epochs.values()) == [float(e) for e in range(EPOCHS)]
    assert keys.TEST_AUC in run.data.metrics
    names = {a.path for a in client.list_artifacts(run_id, keys.CHECKPOINT_DIR)}
    assert {keys.LAST_CHECKPOINT, f"{keys.CHECKPOINT_DIR}/best.ckpt"} <= names


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, MlflowClient]:
    db = tmp_path_factory.mktemp("resume") / "mlflow.db"
    return db, MlflowClient(tracking_uri=f"sqlite:///{db}")


@pytest.fixture(scope="module")
def sigterm_run(smoke_data, store):
    """A 5-epoch training stopped by SIGTERM after its epoch-2 checkpoint: (run id, exit code,
    stderr, the refusal to resume it while it ran)."""
    from calolab.pipeline.resume import ResumeError, check_resumable

    db, client = store
    refusals = []

    def resume_while_alive(run):
        with pytest.raises(ResumeError) as refused:
            check_resumable(client, run)
        refusals.append(str(refused.value))

    proc = _start(_args(smoke_data, db), _env())
    run_id = _signal_after(proc, client, signal.SIGTERM, epochs=2, while_alive=resume_while_alive)
    code, err = _finish(proc)
    return run_id, code, err, refusals[0]


def test_sigterm_ends_the_run_killed_with_its_checkpoint(sigterm_run, store):
    run_id, code, err, refused = sigterm_run
    _, client = store
    assert refused.startswith(f"run {run_id} is still running: its process ")  # while it trained
    assert code == 128 + signal.SIGTERM, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("calolab train: stopped by SIGTERM at epoch ") and f"resume={run_id}" in last
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    interrupted = run.data.tags[keys.INTERRUPTED_TAG]
    assert interrupted.startswith("SIGTERM at epoch ") and f"/{EPOCHS}, step " in interrupted
    assert int(run.data.tags[keys.CHECKPOINT_EPOCHS_TAG]) >= 2
    assert int(run.data.tags[keys.CHECKPOINT_STEP_TAG]) == int(interrupted.split("step ")[1].split()[0])
    assert keys.LAST_CHECKPOINT in {a.path for a in client.list_artifacts(run_id, keys.CHECKPOINT_DIR)}


def test_resume_refuses_a_changed_learning_rate(sigterm_run, store):
    run_id, *_ = sigterm_run
    db, client = store
    res = run_cli("train", f"resume={run_id}", f"tracking.uri=sqlite:///{db}", "model.optimizer.lr=0.01")
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr[-3000:]
    assert "model.optimizer.lr" in lines[0] and "0.0001" in lines[0] and "0.01" in lines[0]
    assert client.get_run(run_id).info.status == "KILLED"  # untouched


def test_resume_finishes_the_same_run(sigterm_run, store):
    run_id, *_ = sigterm_run
    db, client = store
    res = run_cli("train", f"resume={run_id}", f"tracking.uri=sqlite:///{db}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"({run_id})" in res.stdout
    _assert_complete(client, run_id)
    run = client.get_run(run_id)
    assert run.data.tags[keys.RESUMES_TAG] == "1"
    assert run.data.tags[keys.INTERRUPTED_TAG].startswith("SIGTERM")  # the history stays
    assert {"config.yaml", "checkpoints", "onnx", "plots", "evaluation", "data"} <= {
        a.path for a in client.list_artifacts(run_id)
    }
    models = client.search_logged_models([run.info.experiment_id])
    assert {"pytorch", "onnx"} <= {m.name for m in models if m.source_run_id == run_id}
    assert len(client.search_runs([run.info.experiment_id], filter_string=f"attributes.run_id = '{run_id}'")) == 1

    # a finished run is not resumed again
    from calolab.pipeline.resume import ResumeError, check_resumable

    with pytest.raises(ResumeError, match=f"run {run_id} is FINISHED: nothing to resume"):
        check_resumable(client, run)


def test_sigkill_then_slurm_requeue_with_sigusr1(smoke_data, store, tmp_path):
    db, client = store
    job = str(uuid.uuid4().int % 10**7)
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol.calls"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    args = _args(smoke_data, db, "tracking.log_models=false")
    slurm = {"SLURM_JOB_ID": job, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}

    first = _start(args, _env(**slurm, SLURM_RESTART_COUNT="0"))
    run_id = _signal_after(first, client, signal.SIGKILL, epochs=2)
    assert _finish(first)[0] == -signal.SIGKILL
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING" and run.data.tags[keys.SLURM_JOB_TAG] == job

    # the requeued job resumes the run by itself, and is warned by SIGUSR1 an epoch later
    second = _start(args, _env(**slurm, SLURM_RESTART_COUNT="1"))
    done = int(run.data.tags[keys.CHECKPOINT_EPOCHS_TAG])
    assert _signal_after(second, client, signal.SIGUSR1, epochs=done + 1) == run_id
    code, err = _finish(second)
    assert code == 128 + signal.SIGUSR1, err[-3000:]
    assert f"SLURM job {job} requeued" in err
    assert calls.read_text().split() == ["requeue", job]
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags[keys.INTERRUPTED_TAG].startswith("SIGUSR1 at epoch ")
    assert run.data.tags[keys.PID_TAG] == str(second.pid)

    third = subprocess.run(
        [str(Path(sys.executable).with_name("calolab")), "train", *args],
        cwd=ROOT_DIR,
        env=_env(**slurm, SLURM_RESTART_COUNT="2"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert third.returncode == 0, third.stderr[-3000:]
    assert f"({run_id})" in third.stdout
    _assert_complete(client, run_id)
    assert client.get_run(run_id).data.tags[keys.RESUMES_TAG] == "2"


def test_another_hosts_run_is_alive_while_its_heartbeat_is_fresh(store):
    """A RUNNING run of another host is alive while its heartbeat is recent, dead once it is old."""
    from calolab.pipeline.resume import still_alive

    db, client = store
    with TrackedRun(TrackingStore.resolve(f"sqlite:///{db}", db.parent), "photon_id") as run:
        client.set_tag(run.run_id, keys.HOST_TAG, "another-node")
        client.set_tag(run.run_id, keys.PID_TAG, "4242")
        client.set_tag(run.run_id, keys.HEARTBEAT_TAG, f"{time.time() - 30:.0f}")
        assert "alive by its heartbeat (last heartbeat 3" in still_alive(client.get_run(run.run_id))
        client.set_tag(run.run_id, keys.HEARTBEAT_TAG, f"{time.time() - 3600:.0f}")
        assert still_alive(client.get_run(run.run_id)) is None
