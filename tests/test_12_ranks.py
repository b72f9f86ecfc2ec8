"""Issue 12: the one rank flag, the re-executable command line, and SLURM detection of ``trainer=ddp_slurm``.

No cluster and no second process: the environments of the launchers (Lightning's subprocess
launcher, torchrun, a 1- and a 2-node SLURM job) are set as variables, and Lightning's own code
builds the command it would re-execute and the SLURM environment it would train in.
"""

from __future__ import annotations

import os
import sys
import types

import pytest
from hydra.utils import instantiate
from lightning_fabric.strategies.launchers.subprocess_script import _basic_subprocess_cmd
from pytorch_lightning.plugins.environments import SLURMEnvironment

from calolab import cli
from calolab.ranks import RankWaitTimeout, global_rank, is_main_process, wait_for

RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")


@pytest.fixture(autouse=True)
def lightning_rank_restored():
    """A Trainer built here under a launcher's variables sets Lightning's process-wide rank (rank_zero_only.rank),
    which would silence every later logger in this process (MLflow metrics of other tests), and the
    launcher's variables: put both back."""
    from lightning_utilities.core.rank_zero import rank_zero_only

    saved, env = getattr(rank_zero_only, "rank", 0), dict(os.environ)
    yield
    rank_zero_only.rank = saved
    # Lightning's SLURMEnvironment exports MASTER_ADDR (the job's first node) into os.environ: a
    # DDP training started later by this process would wait for that host forever
    os.environ.clear()
    os.environ.update(env)


@pytest.fixture
def clean_env(monkeypatch):
    """No launcher's variables (the test process may run inside a SLURM job or torchrun)."""
    import os

    for name in [*RANK_VARIABLES, *(k for k in os.environ if k.startswith("SLURM_"))]:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("env", "rank"),
    [
        ({}, 0),  # trains alone
        ({"LOCAL_RANK": "0", "NODE_RANK": "0", "WORLD_SIZE": "2"}, 0),  # Lightning's launching process after launch
        ({"LOCAL_RANK": "1", "NODE_RANK": "0", "WORLD_SIZE": "2"}, 1),  # a rank Lightning re-executed
        ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, None),  # node 1 started by hand: not main, rank not known yet
        ({"RANK": "3", "LOCAL_RANK": "1", "GROUP_RANK": "1", "LOCAL_WORLD_SIZE": "2"}, 3),  # torchrun
        ({"SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_JOB_NAME": "calolab"}, 1),  # srun task 1
        (
            {"SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_JOB_NAME": "bash", "LOCAL_RANK": "1"},
            1,
        ),  # salloc + launcher
    ],
)
def test_global_rank_from_the_launchers_variables(clean_env, env, rank):
    for key, value in env.items():
        clean_env.setenv(key, value)
    assert global_rank() == rank
    assert is_main_process() is (rank == 0)


def test_wait_for_times_out_with_what_it_waited_for(clean_env):
    clean_env.setenv("LOCAL_RANK", "1")
    with pytest.raises(RankWaitTimeout, match=r"rank 1 waited 0 s for the data cache /x"):
        wait_for(lambda: False, "the data cache /x", timeout=0.2, poll=0.05)
    calls = iter([False, False, True])
    wait_for(lambda: next(calls), "a sample", timeout=5, poll=0.01)  # returns once ready


@pytest.mark.parametrize(
    ("main_module", "expected"),
    [
        # the `calolab` console script: no spec, `from calolab.cli import main`
        (types.SimpleNamespace(__spec__=None, main=cli.main), ["-m", "calolab.commands.train"]),
        # python -m calolab
        (
            types.SimpleNamespace(__spec__=types.SimpleNamespace(name="calolab.__main__")),
            ["-m", "calolab.commands.train"],
        ),
        # a caller's own main module (pytest, a notebook) calling cli.main in-process: left alone
        (types.SimpleNamespace(__spec__=types.SimpleNamespace(name="pytest")), ["-m", "pytest"]),
    ],
)
def test_ddp_children_reexecute_the_command(monkeypatch, main_module, expected):
    """The command Lightning's subprocess launcher builds for the other ranks runs `calolab train ...`."""
    fake = types.ModuleType("__main__")
    fake.__dict__.update(vars(main_module))
    monkeypatch.setitem(sys.modules, "__main__", fake)
    monkeypatch.setattr(sys, "argv", ["calolab train", "experiment=photon_id", "trainer=ddp"])
    cli._reexecute_as("calolab.commands.train")
    assert list(_basic_subprocess_cmd()) == [sys.executable, *expected, "experiment=photon_id", "trainer=ddp"]


SLURM_TWO_TASKS = {
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "calolab-ddp",
    "SLURM_NTASKS": "2",
    "SLURM_NTASKS_PER_NODE": "2",
    "SLURM_NNODES": "1",
    "SLURM_NODELIST": "gpu017",
    "SLURM_NODEID": "0",
}


@pytest.mark.parametrize(
    ("env", "ranks"),
    [
        ({**SLURM_TWO_TASKS, "SLURM_PROCID": "1", "SLURM_LOCALID": "1"}, (1, 1, 0, 2, 1)),
        ({**SLURM_TWO_TASKS, "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}, (0, 0, 0, 2, 1)),
        (  # 2 nodes x 2 tasks, the second task of the second node
            {
                **SLURM_TWO_TASKS,
                "SLURM_NTASKS": "4",
                "SLURM_NNODES": "2",
                "SLURM_NODELIST": "gpu[017-018]",
                "SLURM_NODEID": "1",
                "SLURM_PROCID": "3",
                "SLURM_LOCALID": "1",
            },
            (3, 1, 1, 4, 2),
        ),
    ],
)
def test_ddp_slurm_selects_lightnings_slurm_environment(clean_env, compose_cfg, env, ranks):
    """trainer=ddp_slurm in a SLURM task: SLURMEnvironment, the task's ranks, devices/nodes from the job."""
    for key, value in env.items():
        clean_env.setenv(key, value)
    cfg = compose_cfg(
        "train",
        ["experiment=photon_id", "trainer=ddp_slurm", "trainer.accelerator=cpu", "trainer.precision=32-true"],
    )
    assert cfg.trainer.devices == 2 and cfg.trainer.num_nodes == ranks[4]
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False, _convert_="all")
    cluster = trainer.strategy.cluster_environment
    assert isinstance(cluster, SLURMEnvironment) and cluster.auto_requeue
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank, trainer.world_size, trainer.num_nodes) == ranks
    assert cluster.main_address == "gpu017"
    assert is_main_process() is (ranks[0] == 0)


def test_other_rank_waits_for_the_sample_and_never_generates(clean_env, tmp_path):
    """Rank 1 with no sample yet: waits for rank 0's (here: in vain, a short limit) and writes nothing."""
    from omegaconf import OmegaConf

    from calolab.app import compose_config
    from calolab.pipeline.samples import ensure_sample
    from tests.conftest import smoke_args

    cfg = compose_config("train", smoke_args(tmp_path))
    gen = OmegaConf.to_container(cfg.generate, resolve=True)
    clean_env.setenv("LOCAL_RANK", "1")
    clean_env.setenv("CALOLAB_RANK_WAIT_S", "0.3")
    with pytest.raises(RankWaitTimeout, match="rank 1 waited 0 s for the photons sample"):
        ensure_sample(gen, progress=False)
    assert not any(tmp_path.iterdir()), "a non-main rank wrote into the data folder"


def test_other_rank_creates_no_run_and_ends_the_main_run_failed(clean_env, tmp_path):
    """TrackedRun on rank 1: no run of its own; its failure ends rank 0's run FAILED with its reason,
    and rank 0 failing afterwards (its peer gone) keeps that first reason."""
    from mlflow.tracking import MlflowClient

    from calolab.tracking import TrackedRun, TrackingStore
    from calolab.tracking.run import RUN_ID_VARIABLE

    store = TrackingStore.resolve(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)
    client = MlflowClient(tracking_uri=store.uri)
    with pytest.raises(ValueError), TrackedRun(store, "ddp") as main_run:
        assert main_run.run_id and os.environ[RUN_ID_VARIABLE] == main_run.run_id  # what the launcher's ranks inherit
        clean_env.setenv("LOCAL_RANK", "1")  # from here on: another rank, as a re-executed child sees it
        with pytest.raises(RuntimeError), TrackedRun(store, "ddp") as other:
            assert other.follower and other.run_id == main_run.run_id
            raise RuntimeError("out of memory on rank 1")
        clean_env.delenv("LOCAL_RANK")
        assert client.get_run(main_run.run_id).info.status == "FAILED"
        raise ValueError("gloo: connection closed by peer")
    assert RUN_ID_VARIABLE not in os.environ
    runs = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert [r.info.run_id for r in runs] == [main_run.run_id]
    run = runs[0]
    assert run.info.status == "FAILED"
    assert run.data.tags["calolab.error"] == "rank 1: RuntimeError: out of memory on rank 1"
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"error_rank_1.txt", "error.txt"} <= names


def test_lightning_sigterm_ends_the_run_killed(clean_env, tmp_path):
    """SLURM's time limit or `scontrol requeue` (SIGTERM -> Lightning's SIGTERMException): KILLED, not FAILED."""
    from mlflow.tracking import MlflowClient
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from calolab.tracking import TrackedRun, TrackingStore

    store = TrackingStore.resolve(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)
    with pytest.raises(SIGTERMException), TrackedRun(store, "ddp") as run:
        raise SIGTERMException
    assert MlflowClient(tracking_uri=store.uri).get_run(run.run_id).info.status == "KILLED"
