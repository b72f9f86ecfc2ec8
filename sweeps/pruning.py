"""The Lightning callback of a sweep trial: report the optimised metric each epoch, prune.

After every validation epoch it reports the study's first metric to the Optuna trial (which
may live in another process: the trial is re-attached from the storage, see
:mod:`sweeps.trial`) and, when the pruner says so, stops the fit; the training pipeline then
raises :class:`optuna.TrialPruned`. It also records every metric's per-epoch values, from
which the trial's objective values are taken, and the epochs trained (``calolab.epochs``).
Under DDP the main process alone talks to the trial; its decision to stop reaches every rank.
"""

from __future__ import annotations

import math

import optuna
import pytorch_lightning as pl

from calolab.ranks import is_main_process


class PruningCallback(pl.Callback):
    """Report ``metrics[0]`` to ``trial`` per validation epoch; stop when it should be pruned.

    Args:
        trial: the attached Optuna trial.
        metrics: the study's metric keys (``val/auc``, ...), one per objective.
        report: report to the trial and ask its pruner (single-objective studies only: Optuna
            takes no intermediate values of others); the study's pruner decides (NopPruner never
            prunes).
    """

    def __init__(self, trial: optuna.Trial, metrics: list[str], *, report: bool = True):
        self.trial, self.metrics, self.report = trial, list(metrics), report
        self.history: dict[str, list[float]] = {m: [] for m in self.metrics}
        self.epochs = 0
        self.pruned_at: int | None = None

    @property
    def pruned(self) -> bool:
        return self.pruned_at is not None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.epochs += 1
        for key in self.metrics:
            if key in trainer.callback_metrics:
                self.history[key].append(float(trainer.callback_metrics[key]))
        stop = self._decide(trainer.current_epoch) if is_main_process() else False
        # DDP: the trial lives with the main process, which alone reports and asks the pruner; every
        # rank stops at the same epoch (a rank that trained on alone would wait in a collective forever)
        if trainer.world_size > 1:
            stop = bool(trainer.strategy.broadcast(stop, src=0))
        if stop:
            trainer.should_stop = True

    def _decide(self, epoch: int) -> bool:
        """Report this epoch's value to the trial; True when the fit should stop (pruned or not finite)."""
        self.trial.set_user_attr("calolab.epochs", self.epochs)
        values = self.history[self.metrics[0]]
        if not values or values[-1] != values[-1] or not math.isfinite(values[-1]):
            return bool(values)  # NaN / inf: stop now, the trial ends FAIL
        if not self.report:
            return False
        self.trial.report(values[-1], step=epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            return True
        return False
