"""Issue 10, the MLflow side, end to end with the real command line: a 2-job Hydra multirun gets
two distinct, readable run names and one shared multirun tag; the experiment is a training
experiment; ntuples copied to another folder train on the same dataset digest and cache; the hint
opens the UI on the store used; a failed ``calolab evaluate/export run_id=X`` leaves run X
FINISHED and records why beside it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from calolab.app import compose_config
from calolab.keys import (
    EXPERIMENT_KIND_TAG,
    MULTIRUN_JOB_TAG,
    MULTIRUN_TAG,
    REEVALUATION_ERROR_ARTIFACT,
    REEVALUATION_ERROR_TAG,
    TRAINING_EXPERIMENT_KIND,
)
from calolab.pipeline.samples import ensure_sample
from calolab.pipeline.train import build_data
from tests.conftest import run_cli

pytestmark = pytest.mark.slow
SMOKE_EVENTS = 240


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A smoke sample generated once, copied as a user's own ntuples to another folder, and a
    2-job grid multirun on the copies: ``calolab train -m ... 'model.optimizer.lr=1e-3,3e-4'``."""
    root = tmp_path_factory.mktemp("issue10")
    data_dir, db, logs = root / "data", root / "mlflow.db", root / "logs"
    base = [
        "experiment=photon_id",
        "debug=smoke",
        f"paths.data_dir={data_dir}",
        f"paths.log_dir={logs}",
        f"generate.n_events={SMOKE_EVENTS}",
        "generate.chunk_size=120",
    ]
    cfg = compose_config("train", base)
    ensure_sample(OmegaConf.to_container(cfg.generate, resolve=True), progress=False)
    original = build_data(cfg)  # builds the cache from the generated files
    ntuples = root / "ntuples"
    ntuples.mkdir()
    for k, f in enumerate(sorted(Path(cfg.generate.out).glob("*.root"))):
        shutil.copyfile(f, ntuples / f"my_photons_{k}.root")
    cache_meta = {p: p.stat().st_mtime_ns for p in (data_dir / "cache").rglob("meta.json")}
    args = [
        "-m",
        *base,
        "generate=null",
        f"data.files=[{ntuples}/*.root]",
        f"tracking.uri=sqlite:///{db}",
        "model.optimizer.lr=1e-3,3e-4",
    ]
    res = run_cli("train", *args, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("photon_id")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    return {
        "root": root,
        "db": db,
        "logs": logs,
        "ntuples": ntuples,
        "data_dir": data_dir,
        "client": client,
        "experiment": exp,
        "runs": runs,
        "stdout": res.stdout,
        "digest": original.digest,
        "cache_meta": cache_meta,
    }


def test_multirun_names_are_distinct_and_say_what_differs(grid):
    runs = grid["runs"]
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    names = [r.info.run_name for r in runs]
    assert len(set(names)) == 2
    # the swept value first (as Hydra writes it), then the other overrides
    assert names[0].startswith("photon_id-lr=0.001,debug=smoke,") and names[1].startswith("photon_id-lr=0.0003,")
    assert not any(str(grid["root"]) in n or "sqlite" in n for n in names)


def test_multirun_runs_share_the_sweep_directory_tag(grid):
    tags = [r.data.tags for r in grid["runs"]]
    sweep_dirs = {t[MULTIRUN_TAG] for t in tags}
    assert len(sweep_dirs) == 1
    (sweep_dir,) = sweep_dirs
    assert Path(sweep_dir).parent == grid["logs"] / "train" / "multiruns" and Path(sweep_dir).is_dir()
    assert sorted(t[MULTIRUN_JOB_TAG] for t in tags) == ["0", "1"]
    found = grid["client"].search_runs([grid["experiment"].experiment_id], f"tags.`{MULTIRUN_TAG}` = '{sweep_dir}'")
    assert len(found) == 2


def test_experiment_is_a_training_experiment(grid):
    assert grid["experiment"].tags[EXPERIMENT_KIND_TAG] == TRAINING_EXPERIMENT_KIND


def test_copied_ntuples_train_on_the_same_digest_and_cache(grid):
    assert {r.data.tags["dataset.digest"] for r in grid["runs"]} == {grid["digest"]}
    after = {p: p.stat().st_mtime_ns for p in (grid["data_dir"] / "cache").rglob("meta.json")}
    assert after == grid["cache_meta"], "the copies built a new cache instead of reusing it"


def test_the_hint_opens_the_store_used(grid):
    out = grid["stdout"]
    assert "make ui" not in out
    assert out.count(f"ui --backend-store-uri sqlite:///{grid['db']}") == 2
    for run in grid["runs"]:
        assert run.info.run_name in out
        assert f"#/experiments/{grid['experiment'].experiment_id}/runs/{run.info.run_id}" in out


@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_failed_reevaluation_leaves_the_training_finished(grid, command):
    run = grid["runs"][0]
    away = grid["root"] / "moved-away"
    grid["ntuples"].rename(away)  # the data of the run are gone
    try:
        res = run_cli(command, f"run_id={run.info.run_id}", f"tracking.uri=sqlite:///{grid['db']}")
    finally:
        away.rename(grid["ntuples"])
    assert res.returncode != 0
    errors = [line for line in res.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "no input file matches" in errors[0], res.stderr[-2000:]
    client = grid["client"]
    after = client.get_run(run.info.run_id)
    assert after.info.status == "FINISHED" and after.info.end_time == run.info.end_time
    assert "no input file matches" in after.data.tags[REEVALUATION_ERROR_TAG]
    assert "calolab.error" not in after.data.tags
    assert REEVALUATION_ERROR_ARTIFACT in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_sweep_trials_are_named_and_grouped(grid):
    """A 2-trial Optuna sweep on the same data: trial runs named ``photon_id-trial-<n>-<sampled
    values>-...``, all tagged with the sweep's directory."""
    args = [
        "-m",
        "experiment=photon_id",
        "debug=smoke",
        "sweep=photon_id",
        f"paths.data_dir={grid['data_dir']}",
        f"paths.log_dir={grid['logs']}",
        f"tracking.uri=sqlite:///{grid['db']}",
        "generate=null",
        f"data.files=[{grid['ntuples']}/*.root]",
        "tracking.log_models=false",
        "trainer.max_epochs=1",
        "hydra.sweeper.study_name=issue10",
        "hydra.sweeper.n_trials=2",
    ]
    res = run_cli("train", *args, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    client = grid["client"]
    trials = [
        r
        for r in client.search_runs([grid["experiment"].experiment_id], "tags.`optuna.study_name` = 'issue10'")
        if "mlflow.parentRunId" in r.data.tags
    ]
    names = sorted(r.info.run_name for r in trials)
    assert [n[: len("photon_id-trial-0-")] for n in names] == ["photon_id-trial-0-", "photon_id-trial-1-"]
    assert all("-lr=" in n and ",dropout=" in n and "debug" not in n for n in names), names  # the sampled values
    sweep_dir = grid["logs"] / "train" / "sweeps" / "issue10"
    assert {r.data.tags[MULTIRUN_TAG] for r in trials} == {str(sweep_dir)}
