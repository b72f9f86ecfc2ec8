"""calolab's Lightning callbacks (``conf/callbacks/``): epoch lines for batch logs, and checkpointing
and early stopping that wait for the first validation.

Lightning's :class:`~pytorch_lightning.callbacks.EarlyStopping` checks its monitored metric at the
end of every training epoch and raises a ``RuntimeError`` when it is missing, which it is whenever
no validation has run yet: ``+trainer.max_steps`` shorter than an epoch,
``trainer.limit_val_batches=0``, ``+trainer.check_val_every_n_epoch`` beyond the epochs run.
:class:`EarlyStopping` and :class:`ModelCheckpoint` here are Lightning's with one change: before
the first validation there is nothing to compare, so they wait (a training without any
validation keeps no best checkpoint, and its last weights are what is evaluated). Once a
validation has run, a monitored metric the model does not log is a :class:`ConfigError` naming the
close matches: one line on the command line, not a traceback. :class:`EpochLines` writes one log
line per epoch when the Trainer shows no progress bar (see :mod:`calolab.progress`).
"""

from __future__ import annotations

import logging
import time

import pytorch_lightning as pl

from calolab.errors import ConfigError, suggest
from calolab.progress import format_epoch

log = logging.getLogger(__name__)


class EpochLines(pl.Callback):
    """One log line per training epoch with the epoch's metrics, when the Trainer shows no bar.

    The line for an epoch is written when the next epoch starts, or when training ends: metrics
    the LightningModule logs in its own ``on_train_epoch_end`` (``train/loss``) reach the Trainer
    only after the callbacks' ``on_train_epoch_end``. Only the global-zero process writes.
    """

    def __init__(self) -> None:
        self._ended: int | None = None  # the epoch whose line is due
        self._start = time.perf_counter()
        self._seconds = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer)
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._ended = trainer.current_epoch
        self._seconds = time.perf_counter() - self._start

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer)

    def _write(self, trainer: pl.Trainer) -> None:
        epoch, self._ended = self._ended, None
        if epoch is None or trainer.progress_bar_callback is not None or not trainer.is_global_zero:
            return
        metrics = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if getattr(v, "numel", lambda: 1)() == 1 and not k.endswith("_step")
        }
        log.info(format_epoch(epoch, trainer.max_epochs, metrics, self._seconds, trainer.global_step))


class _AwaitsValidation:
    """Mixin before a Lightning callback: its epoch-end and validation-end checks run only once the
    monitored metric can be checked; remembers that a validation ran."""

    monitor: str | None
    _validated = False

    def _note_validation(self, trainer: pl.Trainer) -> None:
        if not trainer.sanity_checking:
            self._validated = True

    def _ready(self, trainer: pl.Trainer) -> bool:
        if self.monitor is None or self.monitor in trainer.callback_metrics:
            return True
        if not self._validated:
            return False  # nothing to compare before the first validation
        logged = sorted(trainer.callback_metrics)
        raise ConfigError(
            f"{type(self).__name__} monitor: expected a metric the model logs, but got {self.monitor!r}"
            f"{suggest(self.monitor, logged)} (logged: {', '.join(logged) or 'nothing'})"
        )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._ready(trainer):
            super().on_train_epoch_end(trainer, pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._note_validation(trainer)
        if self._ready(trainer):
            super().on_validation_end(trainer, pl_module)


class EarlyStopping(_AwaitsValidation, pl.callbacks.EarlyStopping):
    """Lightning's EarlyStopping, waiting for the first validation (see the module docstring)."""


class ModelCheckpoint(_AwaitsValidation, pl.callbacks.ModelCheckpoint):
    """Lightning's ModelCheckpoint, waiting for the first validation (see the module docstring)."""

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self.monitor is not None and not self._validated and trainer.is_global_zero and not trainer.fast_dev_run:
            log.info(f"no validation ran, so no checkpoint is best by {self.monitor}: the last weights are evaluated")
