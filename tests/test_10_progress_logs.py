"""Issue 10: quiet batch logs. Outside a terminal a training writes one line per epoch (with its
validation metrics) instead of ``\\r``-updated bars, a generation one line per chunk; on a terminal
the bars stay; Lightning's start-up noise (the litlogger tip, TPU lines, its internal deprecation
warnings) is filtered out of calolab's output by message and source."""

from __future__ import annotations

import logging
import os
import pty
import re
import sys
import warnings

import pytest
import pytorch_lightning as pl
import torch
from mlflow.tracking import MlflowClient
from torch.utils.data import DataLoader, TensorDataset

from calolab.app import compose_config
from calolab.callbacks import EpochLines
from calolab.generation.runner import run_generation
from calolab.logs import quiet_third_party
from calolab.progress import format_epoch
from tests.conftest import run_cli, smoke_args

EPOCH_LINE = re.compile(r"\[calolab\.callbacks\]\[INFO\] - epoch (\d+)/3  train/loss=\S+ .*val/auc=\S+ .*val/loss=\S+")


@pytest.mark.slow
def test_batch_log_of_a_3_epoch_training_is_one_line_per_epoch(smoke_data, tmp_path):
    args = smoke_args(
        smoke_data,
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"paths.log_dir={tmp_path / 'logs'}",
        "trainer.max_epochs=3",
        "callbacks.early_stopping.patience=100",  # all 3 epochs run
        "tracking.log_models=false",
    )
    res = run_cli("train", *args)  # stdout and stderr are pipes, as in a batch job
    assert res.returncode == 0, res.stderr[-3000:]
    out, err = res.stdout, res.stderr
    assert "\r" not in out and "\r" not in err  # no progress-bar updates
    assert len(out.splitlines()) + len(err.splitlines()) < 40, out + err
    epochs = [int(m.group(1)) for m in map(EPOCH_LINE.search, out.splitlines()) if m]
    assert epochs == [1, 2, 3], out
    # Lightning's start-up noise is gone; its useful lines stay
    assert "litlogger" not in out + err
    assert "TPU available" not in err
    assert "LeafSpec" not in err
    assert "GPU available" in err and "`Trainer.fit` stopped: `max_epochs=3` reached." in err
    # the run itself is complete
    run_id = re.search(r"\(([0-9a-f]{32})\)", out).group(1)
    assert MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run_id).info.status == "FINISHED"


@pytest.mark.parametrize("trainer", ["cpu", "gpu", "ddp", "ddp_slurm"])
def test_bars_on_a_terminal_lines_elsewhere(trainer, monkeypatch, tmp_path):
    """Every trainer config resolves enable_progress_bar from stdout: true on a terminal only."""
    cfg = compose_config("train", [f"trainer={trainer}"])
    with open(tmp_path / "log", "w") as file:
        monkeypatch.setattr(sys, "stdout", file)
        assert cfg.trainer.enable_progress_bar is False
    primary, secondary = pty.openpty()
    with os.fdopen(secondary, "w") as terminal:
        monkeypatch.setattr(sys, "stdout", terminal)
        assert cfg.trainer.enable_progress_bar is True
    os.close(primary)


class _Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        return loss

    def on_train_epoch_end(self):
        self.log("train/loss", 0.5)

    def validation_step(self, batch, batch_idx):
        self.log("val/auc", 0.75)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path, progress_bar: bool, epochs: int = 2) -> None:
    data = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress_bar,
        callbacks=[EpochLines()],
        default_root_dir=str(tmp_path),
        accelerator="cpu",
    )
    trainer.fit(_Tiny(), data, data)


def test_epoch_lines_only_without_a_bar(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="calolab.callbacks"):
        _fit(tmp_path, progress_bar=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "calolab.callbacks"]
    assert [line.split("  ")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    assert all("train/loss=0.5" in line and "val/auc=0.75" in line for line in lines)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="calolab.callbacks"):
        _fit(tmp_path, progress_bar=True)
    assert not [r for r in caplog.records if r.name == "calolab.callbacks"]


def test_epoch_line_format():
    line = format_epoch(1, 8, {"val/loss": 0.63012, "train/loss": 0.65234, "val/auc": 0.95811}, 12.34, 400)
    assert line == "epoch 2/8  train/loss=0.6523  val/auc=0.9581  val/loss=0.6301  (step 400, 12.3 s)"
    assert format_epoch(0, -1, {}, 1.0, 3) == "epoch 1  (step 3, 1.0 s)"  # max_steps-bound training


def test_generation_writes_one_line_per_chunk(generate_cfg, caplog):
    cfg = generate_cfg("minbias", n_events=30, overrides=["chunk_size=10", "progress=true"])
    with caplog.at_level(logging.INFO, logger="calolab.progress"):
        run_generation(cfg, "minbias")
    lines = [r.getMessage() for r in caplog.records if r.name == "calolab.progress"]
    assert [line.split(",")[0] for line in lines] == [
        "generate minbias: chunk 1/3 written",
        "generate minbias: chunk 2/3 written",
        "generate minbias: chunk 3/3 written",
    ]
    assert "30/30 events (100%)" in lines[-1]


def test_generation_progress_off_writes_nothing(generate_cfg, caplog, capsys):
    with caplog.at_level(logging.INFO, logger="calolab.progress"):
        run_generation(generate_cfg("minbias", n_events=10), "minbias")  # progress=false
    assert not [r for r in caplog.records if r.name == "calolab.progress"]
    assert capsys.readouterr().out == ""


def test_lightning_noise_is_dropped_and_the_rest_kept(caplog):
    quiet_third_party()
    from pytorch_lightning.utilities.rank_zero import rank_zero_info

    with caplog.at_level(logging.INFO, logger="pytorch_lightning.utilities.rank_zero"):
        rank_zero_info("💡 Tip: For seamless cloud logging, try installing [litlogger](https://x) to enable LitLogger.")
        rank_zero_info("TPU available: False, using: 0 TPU cores")
        rank_zero_info("GPU available: False, used: False")
        rank_zero_info("`Trainer.fit` stopped: `max_epochs=3` reached.")
    assert [r.getMessage() for r in caplog.records] == [
        "GPU available: False, used: False",
        "`Trainer.fit` stopped: `max_epochs=3` reached.",
    ]


def test_only_lightning_internal_deprecations_are_silenced():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party()
        internal = "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)`"
        warnings.warn_explicit(internal, FutureWarning, "_pytree.py", 21, module="pytorch_lightning.utilities._pytree")
        warnings.warn_explicit(internal, FutureWarning, "user.py", 1, module="my_analysis")  # not Lightning's own
        warnings.warn_explicit("something else", FutureWarning, "x.py", 1, module="pytorch_lightning.trainer")
    assert [(str(w.message)[:20], w.filename) for w in caught] == [
        (internal[:20], "user.py"),
        ("something else", "x.py"),
    ]
