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
from tests.conftest import smoke_args

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


class Watch:
    """A training to signal once its run holds a checkpoint of ``epochs`` complete epochs."""

    def __init__(self, proc: subprocess.Popen, sig: int | None, epochs: int = 0, seen=None):
        self.proc, self.sig, self.epochs, self.seen = proc, sig, epochs, seen
        self.run_id: str | None = None
        self.signalled = sig is None

    def poll(self, client: MlflowClient) -> None:
        if self.signalled:
            return
        assert self.proc.poll() is None, (
            f"the training ended before it was signalled: {self.proc.stderr.read()[-3000:]}"
        )
        if self.run_id is None:
            exp = client.get_experiment_by_name("photon_id")
            pid = f"tags.`{keys.PID_TAG}` = '{self.proc.pid}'"
            runs = client.search_runs([exp.experiment_id], filter_string=pid) if exp else []
            if not runs:
                return
            self.run_id = runs[0].info.run_id
        run = client.get_run(self.run_id)
        if self.seen is not None:
            self.seen(run)
            self.seen = None
        if int(run.data.tags.get(keys.CHECKPOINT_EPOCHS_TAG, "0")) >= self.epochs:
            self.proc.send_signal(self.sig)
            self.signalled = True


def _watch(client: MlflowClient, *watches: Watch, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not all(w.signalled for w in watches):
        if time.monotonic() > deadline:
            for w in watches:
                w.proc.kill()
            raise AssertionError(f"not every training reached its checkpoint within {timeout} s")
        for w in watches:
            w.poll(client)
        time.sleep(0.3)


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
    TrackingStore.resolve(f"sqlite:///{db}", db.parent).experiment_id("photon_id")  # one schema, made once
    return db, MlflowClient(tracking_uri=f"sqlite:///{db}")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> dict:
    """A SLURM job's variables and a recording ``scontrol`` on PATH."""
    root = tmp_path_factory.mktemp("slurm")
    calls = root / "scontrol.calls"
    (root / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (root / "scontrol").chmod(0o755)
    job = str(uuid.uuid4().int % 10**7)
    return {"job": job, "calls": calls, "env": {"SLURM_JOB_ID": job, "PATH": f"{root}{os.pathsep}{os.environ['PATH']}"}}


@pytest.fixture(scope="module")
def interrupted(smoke_data, store, slurm) -> dict:
    """Two 5-epoch trainings side by side, each signalled after its epoch-2 checkpoint: SIGTERM
    (checked not resumable while it trains) and SIGKILL (inside the SLURM job)."""
    from calolab.pipeline.resume import ResumeError, check_resumable

    db, client = store
    refusals = []

    def resume_while_alive(run):
        with pytest.raises(ResumeError) as refused:
            check_resumable(client, run)
        refusals.append(str(refused.value))

    term = Watch(_start(_args(smoke_data, db), _env()), signal.SIGTERM, 2, resume_while_alive)
    deadline = time.monotonic() + 600
    while term.run_id is None:  # its data cache is built before its run opens: the next training reuses it
        assert time.monotonic() < deadline, "the first training opened no run within 600 s"
        term.poll(client)
        time.sleep(0.3)
    kill = Watch(_start(_args(smoke_data, db, "tracking.log_models=false"), _env(**slurm["env"])), signal.SIGKILL, 2)
    _watch(client, term, kill)
    term_code, term_err = _finish(term.proc)
    kill_code, _ = _finish(kill.proc)
    return {"term": (term.run_id, term_code, term_err), "kill": (kill.run_id, kill_code), "refused": refusals[0]}


@pytest.fixture(scope="module")
def resumed(interrupted, smoke_data, store, slurm) -> dict:
    """Side by side: a resume of the SIGTERM run with a changed learning rate (refused) and one
    without (finishes it); the requeued SLURM job (resumes the SIGKILL run by itself, SIGUSR1 an epoch
    later); then the job's next restart (finishes it)."""
    db, client = store
    term_id, kill_id = interrupted["term"][0], interrupted["kill"][0]
    uri = f"tracking.uri=sqlite:///{db}"
    done = int(client.get_run(kill_id).data.tags[keys.CHECKPOINT_EPOCHS_TAG])
    args = _args(smoke_data, db, "tracking.log_models=false")
    requeued = Watch(_start(args, _env(**slurm["env"], SLURM_RESTART_COUNT="1")), signal.SIGUSR1, done + 1)
    refused, resume = _start([f"resume={term_id}", uri, "model.optimizer.lr=0.01"], _env()), None
    deadline = time.monotonic() + 600
    while resume is None or not requeued.signalled:
        assert time.monotonic() < deadline, "the resumes did not get going within 600 s"
        requeued.poll(client)
        if resume is None and refused.poll() is not None:  # the refused one is done with the run
            resume = _start([f"resume={term_id}", uri], _env())
        time.sleep(0.3)
    out = {"refused": _finish(refused)}
    out["requeued"] = (*_finish(requeued.proc), requeued)
    restart = _start(args, _env(**slurm["env"], SLURM_RESTART_COUNT="2"))
    out["resume"], out["restart"] = _finish(resume), _finish(restart)
    return out


def test_sigterm_ends_the_run_killed_with_its_checkpoint(interrupted, store):
    run_id, code, err = interrupted["term"]
    _, client = store
    assert interrupted["refused"].startswith(f"run {run_id} is still running: its process ")  # while it trained
    assert code == 128 + signal.SIGTERM, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("calolab train: stopped by SIGTERM at epoch ") and f"resume={run_id}" in last
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    interrupted_at = run.data.tags[keys.INTERRUPTED_TAG]
    assert interrupted_at.startswith("SIGTERM at epoch ") and f"/{EPOCHS}, step " in interrupted_at
    assert int(run.data.tags[keys.CHECKPOINT_EPOCHS_TAG]) >= 2
    assert int(run.data.tags[keys.CHECKPOINT_STEP_TAG]) == int(interrupted_at.split("step ")[1].split()[0])
    assert keys.LAST_CHECKPOINT in {a.path for a in client.list_artifacts(run_id, keys.CHECKPOINT_DIR)}


def test_sigkill_leaves_the_run_running_with_its_last_epoch(interrupted, store, slurm):
    run_id, code = interrupted["kill"]
    _, client = store
    assert code == -signal.SIGKILL
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING" and run.data.tags[keys.SLURM_JOB_TAG] == slurm["job"]
    assert int(run.data.tags[keys.CHECKPOINT_EPOCHS_TAG]) >= 2


def test_resume_refuses_a_changed_learning_rate(interrupted, resumed):
    code, err = resumed["refused"]
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[-3000:]
    assert "model.optimizer.lr" in lines[0] and "0.0001" in lines[0] and "0.01" in lines[0]


def test_resume_finishes_the_same_run(interrupted, resumed, store):
    from calolab.pipeline.resume import ResumeError, check_resumable

    run_id = interrupted["term"][0]
    _, client = store
    code, err = resumed["resume"]
    assert code == 0, err[-3000:]
    _assert_complete(client, run_id)
    run = client.get_run(run_id)
    assert run.data.tags[keys.RESUMES_TAG] == "1"
    assert run.data.tags[keys.INTERRUPTED_TAG].startswith("SIGTERM")  # the history stays
    assert {"config.yaml", "checkpoints", "onnx", "plots", "evaluation", "data"} <= {
        a.path for a in client.list_artifacts(run_id)
    }
    models = client.search_logged_models([run.info.experiment_id])
    assert {"pytorch", "onnx"} <= {m.name for m in models if m.source_run_id == run_id}
    with pytest.raises(ResumeError, match=f"run {run_id} is FINISHED: nothing to resume"):
        check_resumable(client, run)  # a finished run is not resumed again


def test_requeued_slurm_job_resumes_by_itself_and_sigusr1_requeues_it(interrupted, resumed, store, slurm):
    run_id = interrupted["kill"][0]
    _, client = store
    code, err, requeued = resumed["requeued"]
    assert requeued.run_id == run_id  # the same run, found by the job id
    assert code == 128 + signal.SIGUSR1, err[-3000:]
    assert f"SLURM job {slurm['job']} requeued" in err
    assert slurm["calls"].read_text().split() == ["requeue", slurm["job"]]
    code, err = resumed["restart"]
    assert code == 0, err[-3000:]
    _assert_complete(client, run_id)
    run = client.get_run(run_id)
    assert run.data.tags[keys.RESUMES_TAG] == "2"
    assert run.data.tags[keys.INTERRUPTED_TAG].startswith("SIGUSR1 at epoch ")


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
