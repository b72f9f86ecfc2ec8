"""Issue 10: ``+trainer.max_steps=3`` crashed in Lightning's EarlyStopping (``val/auc`` not available:
no validation had run). calolab's EarlyStopping and ModelCheckpoint wait for the first validation,
and a monitor the model does not log is one ConfigError once a validation has run. Fast, in-process,
on a tiny LightningModule; the end-to-end matrix of flags is tests/test_10_trainer_flags.py."""

from __future__ import annotations

import logging

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from calolab.callbacks import EarlyStopping, ModelCheckpoint
from calolab.errors import ConfigError


class _Tiny(pl.LightningModule):
    """Four training batches per epoch; logs ``val/auc`` in validation, ``train/loss`` per epoch."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def on_train_epoch_end(self):
        self.log("train/loss", 0.5)

    def validation_step(self, batch, batch_idx):
        self.log("val/auc", 0.5 + 0.1 * self.current_epoch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path, monitor: str = "val/auc", **trainer_args):
    data = DataLoader(TensorDataset(torch.randn(16, 2)), batch_size=4)
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), filename="best", monitor=monitor, mode="max")
    stop = EarlyStopping(monitor=monitor, mode="max", patience=5)
    args = {"max_epochs": 2, **trainer_args}
    trainer = pl.Trainer(
        logger=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        callbacks=[stop, ckpt],
        default_root_dir=str(tmp_path),
        accelerator="cpu",
        **args,
    )
    trainer.fit(_Tiny(), data, data)
    return trainer, ckpt


def test_fewer_steps_than_an_epoch_finish_without_a_best_checkpoint(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="calolab.callbacks"):
        trainer, ckpt = _fit(tmp_path, max_steps=3)
    assert trainer.global_step == 3
    assert ckpt.best_model_path == ""
    assert "no validation ran, so no checkpoint is best by val/auc" in caplog.text


def test_no_validation_batches_finish_without_a_best_checkpoint(tmp_path):
    trainer, ckpt = _fit(tmp_path, limit_val_batches=0)
    assert trainer.current_epoch == 2 and ckpt.best_model_path == ""


def test_with_validation_the_best_checkpoint_is_kept(tmp_path):
    _, ckpt = _fit(tmp_path, val_check_interval=0.5)
    assert ckpt.best_model_path.endswith("best.ckpt") and float(ckpt.best_model_score) == pytest.approx(0.6)


def test_a_monitor_the_model_does_not_log_is_one_config_error(tmp_path):
    with pytest.raises(
        ConfigError, match=r"expected a metric the model logs, but got 'val/acu'; did you mean 'val/auc'"
    ):
        _fit(tmp_path, monitor="val/acu")
