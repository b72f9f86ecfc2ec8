"""Issue 12: DDP trainings started by torchrun, on one node and on two (emulated on this machine).

``torchrun --standalone --nproc_per_node=2 -m calolab train trainer=ddp ...`` and two torchrun
invocations of one process each with ``--nnodes=2 --node_rank=0/1`` (``trainer.num_nodes`` then
follows ``--nnodes``) run side by side (wall time on 2 cores). torchrun starts the ranks, Lightning
reads its variables (TorchElasticEnvironment) and launches no process of its own: exactly two ranks
each time, one FINISHED MLflow run with its metrics once per epoch. The two-node training starts
from an empty data folder: node 0's rank 0 generates the sample once, the rank of node 1 waits for
it and for the cache. What each rank saw is written by :class:`LauncherReport`, a test-only callback
added with a ``+callbacks.`` override.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl

from calolab.app import ROOT_DIR
from calolab.ranks import is_main_process
from tests.conftest import smoke_args
from tests.test_12_ddp import TIMEOUT, only_run, wait_no_process

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


class LauncherReport(pl.Callback):
    """Writes ``rank<global rank>.json`` into ``out`` at fit start: the ranks and environment Lightning chose."""

    def __init__(self, out: str):
        self.out = Path(out)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        strategy = trainer.strategy
        report = {
            "global_rank": trainer.global_rank,
            "local_rank": trainer.local_rank,
            "node_rank": trainer.node_rank,
            "world_size": trainer.world_size,
            "environment": type(strategy.cluster_environment).__name__,
            # Lightning's launcher object exists under torchrun too, but starts no process there
            "external": strategy.cluster_environment.creates_processes_externally,
            "children": len(getattr(strategy.launcher, "procs", None) or []),
            "main": is_main_process(),
            "pid": os.getpid(),
        }
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def training_args(data_dir: Path, root: Path, *extra: str) -> list[str]:
    return [
        "-m",
        "calolab",
        "train",
        *smoke_args(
            data_dir,
            f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false",
            "tracking.log_models=false",
            f"+callbacks.report._target_={LauncherReport.__module__}.LauncherReport",
            f"+callbacks.report.out={root / 'ranks'}",
            *extra,
        ),
    ]


def check_training(root: Path, nodes: int, devices: int) -> None:
    """One FINISHED run with metrics once per epoch, made by exactly ``nodes * devices`` ranks of torchrun's."""
    reports = sorted(
        (json.loads(p.read_text()) for p in (root / "ranks").glob("rank*.json")), key=lambda r: r["global_rank"]
    )
    assert [r["global_rank"] for r in reports] == list(range(nodes * devices)), reports
    for r in reports:
        assert r["environment"] == "TorchElasticEnvironment" and r["external"] and r["children"] == 0, r
        assert r["world_size"] == nodes * devices and r["main"] is (r["global_rank"] == 0), r
        assert (r["node_rank"], r["local_rank"]) == divmod(r["global_rank"], devices), r
    client, run = only_run(root / "mlflow.db")
    assert run.info.status == "FINISHED"
    assert (run.data.params["trainer.num_nodes"], run.data.params["trainer.devices"]) == (str(nodes), str(devices))
    for key in ("train/loss", "val/loss", "val/auc"):
        history = client.get_metric_history(run.info.run_id, key)
        assert len(history) == 2 and len({m.step for m in history}) == 2, (key, history)
    assert len(client.get_metric_history(run.info.run_id, "test/auc")) == 1
    assert run.data.metrics["export/onnx_max_abs_diff"] < 1e-4


@pytest.mark.slow
def test_torchrun_one_node_and_two_nodes(smoke_data, tmp_path):
    one, two = tmp_path / "standalone", tmp_path / "two-nodes"
    fresh = two / "data"  # no sample yet: generated once, by global rank 0
    port = free_port()
    commands = {
        "standalone": [
            *TORCHRUN,
            "--standalone",
            "--nproc_per_node=2",
            *training_args(smoke_data, one, "trainer.devices=2"),
        ],
        **{
            f"node{node}": [
                *TORCHRUN,
                "--nnodes=2",
                f"--node_rank={node}",
                "--nproc_per_node=1",
                "--master_addr=127.0.0.1",
                f"--master_port={port}",
                # trainer.num_nodes from torchrun's --nnodes (conf/trainer/ddp.yaml), devices=1 (debug=smoke)
                *training_args(fresh, two),
            ]
            for node in (0, 1)
        },
    }
    # the ranks import LauncherReport from tests/: the checkout on the path
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT_DIR), os.environ.get("PYTHONPATH")) if p)
    procs = {}
    try:
        for name, command in commands.items():
            with (tmp_path / f"{name}.log").open("w") as sink:
                procs[name] = subprocess.Popen(
                    command, cwd=ROOT_DIR, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
                )
        for proc in procs.values():
            proc.wait(timeout=TIMEOUT)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    logs = {name: (tmp_path / f"{name}.log").read_text() for name in commands}
    for name, proc in procs.items():
        assert proc.returncode == 0, (name, logs[name][-6000:])

    check_training(one, nodes=1, devices=2)
    assert logs["standalone"].count("Initializing distributed") == 2, logs["standalone"][-3000:]

    check_training(two, nodes=2, devices=1)
    generated = [name for name in ("node0", "node1") if "generating the photons sample" in logs[name]]
    assert generated == ["node0"], generated  # once, and not by the rank of node 1
    assert len(list((fresh / "photons-smoke").glob("*.root"))) == 2  # generate.chunk_size: 2 files
    for name in ("node0", "node1"):
        assert logs[name].count("Initializing distributed") == 1, logs[name][-3000:]
    for root in (one, two):
        assert wait_no_process(str(root / "mlflow.db")) == []


@pytest.mark.parametrize(
    ("env", "sizes"), [({}, ("auto", 1)), ({"LOCAL_WORLD_SIZE": "4", "GROUP_WORLD_SIZE": "2"}, (4, 2))]
)
def test_ddp_trainer_follows_torchruns_sizes(compose_cfg, monkeypatch, env, sizes):
    """trainer=ddp under torchrun: devices = --nproc_per_node, num_nodes = --nnodes (no size typed twice)."""
    for name in ("LOCAL_WORLD_SIZE", "GROUP_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cfg = compose_cfg("train", ["experiment=photon_id", "trainer=ddp"])
    assert (cfg.trainer.devices, cfg.trainer.num_nodes) == sizes


def test_other_srun_rank_in_a_first_job_neither_resumes_nor_creates_the_store(monkeypatch, tmp_path):
    """srun starts every rank at once: in a job that was not requeued, a non-main rank does not look
    for a run of the job to resume (it would find the one the main process opens meanwhile) and
    does not open the store (two processes creating one SQLite file fail); it goes on to wait for
    the sample, as a rank of a new run does."""
    from calolab.app import compose_config
    from calolab.pipeline.train import train
    from calolab.ranks import RankWaitTimeout

    for name in [*(k for k in os.environ if k.startswith("SLURM_")), "RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK"]:
        monkeypatch.delenv(name, raising=False)
    for name, value in {
        "SLURM_JOB_ID": "4242",
        "SLURM_PROCID": "1",
        "SLURM_NTASKS": "2",
        "CALOLAB_RANK_WAIT_S": "0.3",
    }.items():
        monkeypatch.setenv(name, value)
    db = tmp_path / "mlflow.db"
    cfg = compose_config("train", smoke_args(tmp_path / "data", f"tracking.uri=sqlite:///{db}"))
    with pytest.raises(RankWaitTimeout, match="rank 1 waited 0 s for the photons sample"):
        train(cfg)
    assert not db.exists()
