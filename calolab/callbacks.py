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

:class:`RunCheckpoint` keeps a tracked training resumable (``calolab train resume=<run_id>``, see
:mod:`calolab.pipeline.resume`): the full training state goes to the run at every epoch end and
when a signal stops the training (:mod:`calolab.pipeline.preemption`). The pipeline adds it to
every tracked training; it is not a config option.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from calolab import keys
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


class RunCheckpoint(pl.callbacks.Checkpoint):
    """Logs the latest full training state to the run, so that an interrupted training can resume.

    At every training epoch end (after the monitoring callbacks, as a Lightning ``Checkpoint``) the
    state ``Trainer.save_checkpoint`` would write (the model, every optimiser and scheduler: one or
    several, any task, manual optimisation included; the loops' progress; the callbacks' state) is
    taken and its tensors copied; a background thread then writes it and logs it as
    ``checkpoints/last.ckpt`` (replacing the previous one: ``kill -9`` loses at most the epoch in
    flight), with the best checkpoint of each ModelCheckpoint when it changed, and sets the tags
    :data:`~calolab.keys.CHECKPOINT_EPOCHS_TAG`, :data:`~calolab.keys.CHECKPOINT_STEP_TAG` and the
    heartbeat once the file is in the run. Training goes on meanwhile (the copy costs milliseconds,
    writing and logging a photon CNN's 17 MB a few hundred; ``bench/train_cpu.py``); one upload runs
    at a time, and training ends only once the last is done. When Lightning stops the training on a
    signal (``SIGTERMException`` at the next batch), the state at that batch is written and logged
    at once, and :attr:`interrupted_at` says where. Only the main process (global rank 0) writes.

    Args:
        store_uri: the run's tracking URI; None on the other DDP ranks (they write nothing).
        run_id: the run.
        dirpath: the scratch folder the checkpoint is written to before it is logged.
    """

    def __init__(self, store_uri: str | None, run_id: str | None, dirpath: str | Path):
        self.store_uri, self.run_id, self.dirpath = store_uri, run_id, Path(dirpath)
        self.interrupted_at: str | None = None
        self.seconds = 0.0  # time the training waited for checkpoints (bench/train_cpu.py)
        self._best_logged: dict[str, float] = {}
        self._client = None
        self._upload: threading.Thread | None = None
        self._error: BaseException | None = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            # this epoch is counted complete once the hooks return: the checkpoint resumes after it
            self._save(trainer, epochs=trainer.current_epoch + 1, background=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.wait()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.wait()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        if not isinstance(exception, SIGTERMException | KeyboardInterrupt):
            self.wait(check=False)  # a failure: the last epoch's checkpoint stays the one to resume from
            return
        epochs = trainer.fit_loop.epoch_progress.current.completed
        # numbered from 1 as the epoch log lines are (calolab.progress); the count of complete epochs
        # is the CHECKPOINT_EPOCHS_TAG
        of = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        self.interrupted_at = (
            f"epoch {trainer.current_epoch + 1}{of}, step {trainer.global_step} ({epochs} epoch(s) complete)"
        )
        try:
            self._save(trainer, epochs=epochs, background=False)
        except Exception as err:  # never mask the interruption; the last epoch's checkpoint stays
            log.warning(f"the checkpoint at the interruption was not logged: {type(err).__name__}: {err}")

    def wait(self, check: bool = True) -> None:
        """Wait for the upload in flight; a failed one is a warning (``check``): the training goes on,
        and the next epoch's checkpoint is tried."""
        if self._upload is not None:
            self._upload.join()
            self._upload = None
        error, self._error = self._error, None
        if error is not None and check:
            log.warning(f"a checkpoint was not logged to run {self.run_id}: {type(error).__name__}: {error}")

    def _save(self, trainer: pl.Trainer, epochs: int, background: bool) -> None:
        if trainer.fast_dev_run or not trainer.is_global_zero or not (self.store_uri and self.run_id):
            return  # DDP: the other ranks hold the same state (Trainer.save_checkpoint writes rank 0's alone)
        start = time.perf_counter()
        self.wait()  # one upload at a time: the previous epoch's is in the run before this one starts
        # the state Trainer.save_checkpoint writes (its own first step), taken now
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
        best = [p for cb in trainer.checkpoint_callbacks if (p := getattr(cb, "best_model_path", ""))]
        job = (checkpoint, epochs, trainer.global_step, best, trainer.strategy.checkpoint_io)
        if background:
            from lightning_utilities.core.apply_func import apply_to_collection

            # copied, so that the next steps do not change what is being written
            job = (apply_to_collection(checkpoint, torch.Tensor, lambda t: t.detach().clone()), *job[1:])
            self._upload = threading.Thread(target=self._write_and_log, args=job, name="calolab-checkpoint")
            self._upload.start()
        else:
            self._write_and_log(*job)
            error, self._error = self._error, None
            if error is not None:
                raise error
        self.seconds += time.perf_counter() - start

    def _write_and_log(self, checkpoint: dict, epochs: int, step: int, best: list[str], checkpoint_io) -> None:
        from mlflow.entities import RunTag
        from mlflow.tracking import MlflowClient

        try:
            path = self.dirpath / keys.LAST_CHECKPOINT_NAME
            path.parent.mkdir(parents=True, exist_ok=True)
            checkpoint_io.save_checkpoint(checkpoint, path)
            self._client = self._client or MlflowClient(self.store_uri)
            self._client.log_artifact(self.run_id, str(path), keys.CHECKPOINT_DIR)
            for file in best:
                if os.path.exists(file) and self._best_logged.get(file) != os.path.getmtime(file):
                    self._best_logged[file] = os.path.getmtime(file)
                    self._client.log_artifact(self.run_id, file, keys.CHECKPOINT_DIR)
            tags = {
                keys.CHECKPOINT_EPOCHS_TAG: str(epochs),
                keys.CHECKPOINT_STEP_TAG: str(step),
                keys.HEARTBEAT_TAG: f"{time.time():.0f}",
            }
            self._client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        except Exception as err:  # reported in the training's thread by the next wait()
            self._error = err
