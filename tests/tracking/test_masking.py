"""Credentials never reach a run's traceback (error.txt) or its name."""

from __future__ import annotations

import pytest

from calolab.tracking import TrackedRun
from calolab.tracking.naming import run_name

SECRET = "S3CRET-in-a-traceback-7f3a"


def test_error_txt_and_reason_are_masked(store, experiment):
    with pytest.raises(RuntimeError), TrackedRun(store, experiment) as run:
        raise RuntimeError(f"cannot connect to postgresql://alice:{SECRET}@db.example:5432/optuna")
    client = store.client()
    info = client.get_run(run.run_id)
    assert info.info.status == "FAILED"
    assert SECRET not in info.data.tags["calolab.error"]
    text = client.download_artifacts(run.run_id, "error.txt")
    with open(text) as f:
        logged = f.read()
    assert "cannot connect to postgresql://" in logged and SECRET not in logged


def test_run_name_masks_credential_overrides():
    name = run_name("photon_id", overrides=[f"+db.password={SECRET}", "model.optimizer.lr=0.01"])
    assert SECRET not in name and "lr=0.01" in name
