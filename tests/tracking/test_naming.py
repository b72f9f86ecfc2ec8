"""Run names: what the run is (experiment, overrides, trial), unique even under a fixed seed;
the multirun tag that groups the runs of one ``-m``."""

from __future__ import annotations

import re
from datetime import datetime

import pytorch_lightning as pl
from hydra.types import RunMode
from omegaconf import OmegaConf

from calolab.keys import MULTIRUN_JOB_TAG, MULTIRUN_TAG
from calolab.tracking import TrackedRun
from calolab.tracking.hydra_job import multirun_tags
from calolab.tracking.naming import describe_overrides, run_name, swept_keys

STAMP = re.compile(r"-\d{8}-\d{6}-[a-z0-9]{4}$")


def test_name_says_experiment_overrides_and_time():
    when = datetime(2025, 6, 12, 14, 30, 5)
    name = run_name(
        "photon_id",
        overrides=[
            "experiment=photon_id",
            "debug=smoke",
            "paths.data_dir=/tmp/x",
            "tracking.uri=sqlite:////tmp/x/mlflow.db",
            "model.optimizer.lr=3e-4",
        ],
        now=when,
    )
    assert name.startswith("photon_id-debug=smoke,lr=3e-4-20250612-143005-")
    assert STAMP.search(name)
    assert "tmp" not in name and "sqlite" not in name


def test_trial_number_and_sampled_values_are_short():
    name = run_name(
        "photon_id",
        trial=7,
        overrides=[
            "sweep=photon_id",
            "model.optimizer.lr=0.000423178291",
            "+sweep_trial.number=7",
            "+sweep_trial.storage='journal:/a/b'",
            "hydra.sweep.subdir=trial_7",
        ],
    )
    assert name.startswith("photon_id-trial-7-lr=0.000423-")
    assert "journal" not in name and "subdir" not in name


def test_names_are_unique_under_a_fixed_seed():
    names = set()
    for _ in range(20):
        pl.seed_everything(12345, verbose=False)  # seeds random, numpy and torch, as calolab train does
        names.add(run_name("photon_id", overrides=[], now=datetime(2025, 1, 1)))
    assert len(names) == 20


def test_tracked_runs_get_distinct_names_after_seeding(store):
    client = store.client()
    ids = []
    for _ in range(2):
        pl.seed_everything(12345, verbose=False)
        with TrackedRun(store, "naming") as run:
            ids.append(run.run_id)
    names = [client.get_run(i).info.run_name for i in ids]
    assert names[0] != names[1]
    assert all(n.startswith("naming-") and STAMP.search(n) for n in names)


def test_an_explicit_run_name_is_kept(store):
    with TrackedRun(store, "naming", run_name="my-run") as run:
        pass
    assert store.client().get_run(run.run_id).info.run_name == "my-run"


def test_override_summary_drops_noise_and_disambiguates():
    text = describe_overrides(
        [
            "data.files=[/scratch/me/*.root]",
            "~callbacks.early_stopping",
            "model.optimizer.lr=1e-3",
            "model.scheduler.lr=5e-4",
            "trainer.enable_progress_bar=false",
        ]
    )
    assert text == "~early_stopping,optimizer.lr=1e-3,scheduler.lr=5e-4"


def test_swept_keys_come_first():
    argv = ["-m", "experiment=photon_id", "debug=smoke", "model.optimizer.lr=1e-3,3e-4", "seed=range(1,3)"]
    first = swept_keys(argv)
    assert first == {"model.optimizer.lr", "seed"}
    job = ["experiment=photon_id", "debug=smoke", "model.optimizer.lr=0.0003", "seed=2"]
    assert describe_overrides(job, first=first) == "lr=0.0003,seed=2,debug=smoke"
    assert swept_keys() == set()  # outside a Hydra multirun


def test_override_summary_is_bounded():
    text = describe_overrides([f"model.net.width_{i}=12345" for i in range(20)])
    assert len(text) <= 64 and text.endswith(tuple(f",+{n}" for n in range(1, 20)))


def test_multirun_tag_from_the_hydra_node(tmp_path):
    hydra = OmegaConf.create(
        {"mode": RunMode.MULTIRUN, "sweep": {"dir": str(tmp_path / "multiruns" / "x")}, "job": {"num": 1}}
    )
    assert multirun_tags(hydra) == {MULTIRUN_TAG: str(tmp_path / "multiruns" / "x"), MULTIRUN_JOB_TAG: "1"}
    single = OmegaConf.create({"mode": RunMode.RUN, "sweep": {"dir": "x"}, "job": {"num": 0}})
    assert multirun_tags(single) == {}


def test_no_multirun_tag_outside_hydra(store):
    with TrackedRun(store, "naming") as run:
        pass
    assert MULTIRUN_TAG not in store.client().get_run(run.run_id).data.tags
