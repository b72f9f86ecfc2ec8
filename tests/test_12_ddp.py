"""Issue 12: two-process DDP (gloo, CPU) trainings end to end through the command line.

A smoke training with ``trainer=ddp devices=2`` makes one FINISHED MLflow run with its metrics
once per epoch, its params and its ONNX model; two ranks of batch B/2 end with the weights of one
process of batch B on the same events (float32 summation order apart); a rank that raises
mid-epoch (rank 1, a re-executed child, or rank 0, the launching process) ends that one run
FAILED with its reason, the command exits non-zero and no rank is left running. The failure comes
from :class:`FailOnRank`, a test-only callback added with a ``+callbacks.`` override: calolab
itself has no failure switch.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
from mlflow.tracking import MlflowClient

from calolab import keys
from calolab.app import ROOT_DIR
from tests.conftest import run_cli, smoke_args

#: two ranks on a shared 2-core machine: minutes, not seconds
TIMEOUT = 900


class FailOnRank(pl.Callback):
    """Raises on ``rank`` at training batch ``batch`` of the first epoch (a test's injected failure)."""

    def __init__(self, rank: int, batch: int = 1):
        self.rank, self.batch = rank, batch

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_rank == self.rank and trainer.current_epoch == 0 and batch_idx == self.batch:
            raise RuntimeError(f"injected failure on rank {self.rank}")


class SignalOnRank(pl.Callback):
    """Sends ``signal`` to its own process on every rank, rank r at training batch ``batch + r`` of
    epoch 1: the signal of ``sbatch --signal`` or ``scancel``, which SLURM delivers to every task
    of the step, each catching it at another point of its batch (a test's injected signal)."""

    def __init__(self, signal: str = "SIGUSR1", batch: int = 1):
        self.signal, self.batch = signal, batch

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if trainer.current_epoch == 0 and batch_idx == self.batch + trainer.global_rank:
            os.kill(os.getpid(), getattr(signal, self.signal))


def ddp_args(data_dir: Path, db: Path, *extra: str) -> list[str]:
    return smoke_args(
        data_dir,
        f"tracking.uri=sqlite:///{db}",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.enable_progress_bar=false",
        *extra,
    )


def processes_mentioning(marker: str) -> list[int]:
    """Pids of live processes (not zombies) whose command line contains ``marker`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def wait_no_process(marker: str, seconds: float = 20) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := processes_mentioning(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def only_run(db: Path):
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("photon_id")
    runs = client.search_runs([exp.experiment_id]) if exp is not None else []
    assert len(runs) == 1, [(r.info.run_id, r.info.status) for r in runs]
    return client, runs[0]


@pytest.mark.slow
def test_ddp_two_processes_one_finished_run(smoke_data, tmp_path):
    """`python -m calolab train trainer=ddp devices=2`: the child rank re-executes correctly; one run."""
    import subprocess
    import sys

    db = tmp_path / "mlflow.db"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    res = subprocess.run(
        [sys.executable, "-m", "calolab", "train", *ddp_args(smoke_data, db)],
        cwd=ROOT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    assert "MEMBER: 2/2" in res.stdout + res.stderr  # a second rank did join
    client, run = only_run(db)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["trainer.devices"] == "2" and params["trainer.strategy"] == "ddp"
    assert params["trainer.max_epochs"] == "2"
    for key in ("train/loss", "val/loss", "val/auc"):  # rank 0 alone logs: once per epoch, not once per rank
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == sorted({m.step for m in history}) and len(history) == 2, (key, history)
    assert len(client.get_metric_history(run.info.run_id, "test/auc")) == 1
    assert run.data.metrics["export/onnx_max_abs_diff"] < 1e-4
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "checkpoints", "onnx", "evaluation"} <= names
    assert not [n for n in names if n.startswith("error")]
    models = client.search_logged_models([run.info.experiment_id])
    assert {"pytorch", "onnx"} <= {m.name for m in models if m.source_run_id == run.info.run_id}
    assert wait_no_process(str(db)) == []


@pytest.mark.slow
@pytest.mark.parametrize("rank", [1, 0])
def test_rank_failure_ends_the_run_failed(smoke_data, tmp_path, rank):
    """A rank raising mid-epoch: the one run FAILED with that rank's error, non-zero exit, no rank left."""
    db = tmp_path / "mlflow.db"
    args = ddp_args(
        smoke_data,
        db,
        f"+callbacks.fail._target_={FailOnRank.__module__}.FailOnRank",
        f"+callbacks.fail.rank={rank}",
    )
    # the re-executed rank imports the callback from tests/: the checkout on the path
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT_DIR), os.environ.get("PYTHONPATH")) if p)}
    res = run_cli("train", *args, env=env, timeout=TIMEOUT)
    assert res.returncode != 0, res.stdout[-3000:]
    _, run = only_run(db)
    assert run.info.status == "FAILED"
    reason = run.data.tags["calolab.error"]
    assert f"injected failure on rank {rank}" in reason, reason
    if rank:  # recorded by the failing child itself, before Lightning's launcher killed rank 0
        assert reason.startswith(f"rank {rank}: RuntimeError"), reason
    assert wait_no_process(str(db)) == [], "a rank outlived the command"


@pytest.mark.slow
def test_signal_on_every_rank_stops_them_together_with_the_checkpoint(smoke_data, tmp_path):
    """SIGUSR1 on both ranks, caught at different batches (as ``sbatch --signal=USR1@<s>`` sends it
    to every task): both ranks stop at the same batch, the run ends KILLED with where it stopped and
    its checkpoint at that batch, the command exits 128 + SIGUSR1, no rank is left. (Lightning's own
    SIGTERM handler runs a broadcast inside the signal handler; with the signal on both ranks those
    collectives pair with whatever the other rank runs and the job hangs: Lightning #20806.)"""
    db = tmp_path / "mlflow.db"
    args = ddp_args(
        smoke_data,
        db,
        f"+callbacks.signal._target_={SignalOnRank.__module__}.SignalOnRank",
        "tracking.log_models=false",
    )
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT_DIR), os.environ.get("PYTHONPATH")) if p)}
    res = run_cli("train", *args, env=env, timeout=240)
    out = res.stdout + res.stderr
    assert res.returncode == 128 + signal.SIGUSR1, out[-4000:]
    client, run = only_run(db)
    assert run.info.status == "KILLED", out[-4000:]
    # rank 0 caught it before batch 2 (index 1), rank 1 before batch 3: both stop after batch 2
    assert run.data.tags[keys.INTERRUPTED_TAG] == "SIGUSR1 at epoch 1/2, step 2 (0 epoch(s) complete)"
    assert run.data.tags[keys.CHECKPOINT_STEP_TAG] == "2"
    assert "checkpoints/last.ckpt" in {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert wait_no_process(str(db)) == [], "a rank outlived the command"


#: two ranks of batch 16 against one process of batch 32: float32 sums in another order (the
#: gradient all-reduce, the per-rank convolutions) differ by ~1e-7 per weight after 8 Adam steps
#: (measured: 1.1e-7), while one step moves a weight by up to lr = 1e-4: a batch split unevenly
#: or drawn from other events would miss this tolerance by orders of magnitude
WEIGHTS_ATOL = 1e-6


@pytest.mark.slow
def test_ddp_two_ranks_train_the_weights_of_one_process(smoke_data, tmp_path):
    """Two gloo ranks of batch 16 and one process of batch 32, same seed and events: the same last
    checkpoint (within :data:`WEIGHTS_ATOL`), the same per-epoch train/loss, and the same per-epoch
    val/loss and val/auc (the ranks' validation shares are not padded: each of the 31 validation
    events is scored once, and the metrics are reduced over both ranks).

    Shuffling stays on: each epoch's permutation is drawn from ``data.seed + epoch`` whatever the
    number of ranks, and rank r takes its every 2nd event (datamodules.loader.BatchLoader), so that
    batch b of the two ranks together is batch b of the single process, in both epochs. Three
    things are set that would otherwise differ by design, not by error:

    - dropout off: each rank draws its own masks for its half of the batch;
    - unit event weights (no weight branch, class weights or reweighting): the loss is each batch's
      weighted mean, and DDP averages the ranks' gradients, i.e. the mean of two weighted means,
      which equals the weighted mean of the whole batch only when both halves weigh the same
      (with photon_id's weights the last checkpoints differ by up to ~1e-3);
    - 4 batches of 32 of the 177 training events (debug=smoke): no last, uneven batch, which the
      ranks would pad by repeating events.

    The single process trains in this process while the ranks run (wall time on 2 cores).
    """
    import subprocess
    import sys

    import torch

    from calolab.app import compose_config
    from calolab.pipeline.train import train

    alike = (
        "trainer.enable_progress_bar=false",
        "tracking.log_models=false",
        "net.dropout=0.0",
        "data.weight=null",
        "data.class_weights=false",
        "data.reweight=null",
    )
    ddp_db, single_db = tmp_path / "ddp.db", tmp_path / "single.db"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    log = tmp_path / "ddp.log"  # a file, not a pipe: the ranks must not block on a full pipe meanwhile
    with log.open("w") as sink:
        ranks = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "calolab",
                "train",
                *ddp_args(smoke_data, ddp_db, *alike),
                "data.batch_size=16",
                f"data.cache_dir={tmp_path / 'cache-ddp'}",  # each training builds its own cache: no race
            ],
            cwd=ROOT_DIR,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: both ranks are stopped if this test fails
        )
    try:
        cfg = compose_config(
            "train",
            [
                *smoke_args(smoke_data, *alike),
                f"tracking.uri=sqlite:///{single_db}",
                "data.batch_size=32",
                f"data.cache_dir={tmp_path / 'cache'}",
            ],
        )
        single = train(cfg)
        ranks.wait(timeout=TIMEOUT)
    finally:
        if ranks.poll() is None:
            os.killpg(ranks.pid, signal.SIGKILL)
            ranks.wait()
    out = log.read_text()
    assert ranks.returncode == 0, out[-6000:]
    assert "MEMBER: 2/2" in out

    def last_checkpoint(db: Path) -> tuple[MlflowClient, str, dict]:
        client, run = only_run(db)
        assert run.info.status == "FINISHED"
        path = client.download_artifacts(run.info.run_id, "checkpoints/last.ckpt", str(tmp_path / db.stem))
        return client, run.info.run_id, torch.load(path, map_location="cpu", weights_only=False)

    one_client, one_id, one = last_checkpoint(single_db)
    two_client, two_id, two = last_checkpoint(ddp_db)
    assert one_id == single["run_id"]
    assert one["global_step"] == two["global_step"] == 8  # 2 epochs x 4 batches on both
    assert one["state_dict"].keys() == two["state_dict"].keys()
    diffs = {name: (two["state_dict"][name] - w).abs().max().item() for name, w in one["state_dict"].items()}
    assert max(diffs.values()) < WEIGHTS_ATOL, sorted(diffs.items(), key=lambda d: -d[1])[:5]
    losses = [
        [m.value for m in sorted(c.get_metric_history(i, "train/loss"), key=lambda m: m.step)]
        for c, i in ((one_client, one_id), (two_client, two_id))
    ]
    assert len(losses[0]) == 2 and losses[0] == pytest.approx(losses[1], abs=1e-5)  # reduced over both ranks
    for key in ("val/loss", "val/auc", "val/auc_unweighted"):
        history = [
            [m.value for m in sorted(c.get_metric_history(i, key), key=lambda m: m.step)]
            for c, i in ((one_client, one_id), (two_client, two_id))
        ]
        assert len(history[0]) == 2 and history[0] == pytest.approx(history[1], abs=1e-5), (key, history)
    assert wait_no_process(str(ddp_db)) == []
