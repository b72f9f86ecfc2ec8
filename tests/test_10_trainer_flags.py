"""Issue 10: any Lightning Trainer flag a user adds to ``calolab train`` finishes, or stops with one
clear line and exit code 2; never a traceback. Each flag runs a smoke training of its own (the
``calolab`` console script, as a user would), on the session's smoke sample."""

from __future__ import annotations

import re

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import run_cli, smoke_args

pytestmark = pytest.mark.slow

FLAGS = [
    "+trainer.max_steps=3",  # fewer steps than one epoch: no validation ever runs
    "+trainer.fast_dev_run=true",  # Lightning turns checkpointing and logging off
    "+trainer.val_check_interval=0.5",  # two validations per epoch
    "+trainer.accumulate_grad_batches=2",
    "+trainer.gradient_clip_val=1.0",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=0",  # no validation: the last weights are evaluated
    "trainer.limit_train_batches=0",  # trains nothing: refused before a run is opened
]


def _train(smoke_data, tmp_path, *extra: str):
    db = tmp_path / "mlflow.db"
    args = smoke_args(
        smoke_data, f"tracking.uri=sqlite:///{db}", f"paths.log_dir={tmp_path / 'logs'}", "tracking.log_models=false"
    )
    return run_cli("train", *args, *extra), db


def _finished_or_one_line(res, db) -> str:
    """'finished' (a FINISHED run with test metrics) or 'refused' (one error line, exit 2)."""
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    if res.returncode == 0:
        run_id = re.search(r"\(([0-9a-f]{32})\)", res.stdout).group(1)
        run = MlflowClient(tracking_uri=f"sqlite:///{db}").get_run(run_id)
        assert run.info.status == "FINISHED"
        assert 0.0 <= run.data.metrics["test/auc"] <= 1.0
        return "finished"
    assert res.returncode == 2, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("calolab train: error: "), res.stderr
    return "refused"


@pytest.mark.parametrize("flag", FLAGS)
def test_trainer_flag_finishes_or_gives_one_line(flag, smoke_data, tmp_path):
    res, db = _train(smoke_data, tmp_path, flag)
    outcome = _finished_or_one_line(res, db)
    if flag in ("+trainer.max_steps=3", "trainer.limit_val_batches=0"):
        assert outcome == "finished"
        assert "no validation ran, so no checkpoint is best by val/auc: the last weights are evaluated" in res.stdout
    elif flag == "trainer.limit_train_batches=0":
        assert outcome == "refused" and "nothing to train" in res.stderr
        assert not db.exists() or not MlflowClient(tracking_uri=f"sqlite:///{db}").search_runs(
            [e.experiment_id for e in MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()]
        )  # no run, not even a FAILED one
    else:
        assert outcome == "finished"


def test_misspelt_monitor_is_one_line_naming_the_close_match(smoke_data, tmp_path):
    res, db = _train(smoke_data, tmp_path, "callbacks.early_stopping.monitor=val/acu")
    assert _finished_or_one_line(res, db) == "refused"
    assert "EarlyStopping monitor: expected a metric the model logs, but got 'val/acu'; did you mean 'val/auc'" in (
        res.stderr
    )
