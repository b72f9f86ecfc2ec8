"""Two sweep workers on one study in PostgreSQL: no duplicate trial numbers, each adds its own
n_trials. The server is the session's ``postgres_url`` (the machine's at 127.0.0.1:5432, or one
the tests start): this test never skips. Each run works in a fresh schema, dropped afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import psycopg2
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from calolab.app import ROOT_DIR
from sweeps.storage import open_storage
from tests.sweeps.test_sweep import sweep_args

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_two_workers_share_a_postgres_study(tmp_path, pg_storage, postgres_url):
    url, schema = pg_storage
    study_name = f"pg-{uuid.uuid4().hex[:8]}"
    # one small sample first, so that the two workers do not both generate it
    from omegaconf import OmegaConf

    from calolab.app import compose_config
    from calolab.pipeline.samples import ensure_sample
    from calolab.tracking import TrackingStore

    cfg = compose_config("train", [a for a in sweep_args(tmp_path) if a != "-m"])
    ensure_sample(OmegaConf.to_container(cfg.generate, resolve=True))
    # and the MLflow SQLite store (several workers on a shared tracking store use a server)
    TrackingStore.resolve(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path).experiment_id("photon_id")
    args = sweep_args(
        tmp_path,
        "sweep=photon_id",
        f"hydra.sweeper.study_name={study_name}",
        f"hydra.sweeper.storage='{url}'",
        "hydra.sweeper.n_trials=2",
        "trainer.max_epochs=1",
    )
    exe = Path(sys.executable).with_name("calolab")
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    workers = [
        subprocess.Popen(
            [str(exe), "train", *args], cwd=ROOT_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=600) for w in workers]
    for w, (_, err) in zip(workers, outputs, strict=True):
        assert w.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name=study_name, storage=open_storage(url))
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert len({t.user_attrs["calolab.worker"] for t in trials}) == 2
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("photon_id")
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("optuna.study_name") == study_name]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 2 and len(runs) == 6
    assert not [r for r in runs if any(k.startswith("sweep_trial") for k in r.data.params)]
    with psycopg2.connect(postgres_url) as conn, conn.cursor() as cur:  # the study lives in the fresh schema only
        cur.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s AND table_name = 'trials'",
            (schema,),
        )
        assert cur.fetchone()[0] == 1
