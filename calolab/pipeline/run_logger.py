"""Lightning's MLflow logger, writing into calolab's run without deciding how the run ends.

Lightning's :class:`~pytorch_lightning.loggers.MLFlowLogger` ends the run itself when fitting ends
(FINISHED before evaluation and export have run, FAILED on an interruption); in calolab the run's
status belongs to :class:`~calolab.tracking.TrackedRun` alone (FINISHED once the models are
logged, KILLED on a signal), so :class:`RunLogger` leaves it. A resumed run passes the last step
it holds for each metric, and points up to it are not logged again: after ``kill -9`` the epoch in
flight is trained again from the last epoch's checkpoint, without duplicating its steps.
"""

from __future__ import annotations

from collections.abc import Mapping

from pytorch_lightning.loggers import MLFlowLogger


class RunLogger(MLFlowLogger):
    """MLFlowLogger on an existing run (``run_id``); ``logged_steps``: metric -> last step already logged."""

    def __init__(self, *args, logged_steps: Mapping[str, int] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.logged_steps = dict(logged_steps or {})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self.logged_steps:
            metrics = {k: v for k, v in metrics.items() if (step or 0) > self.logged_steps.get(k, -1)}
        if metrics:
            super().log_metrics(metrics, step)

    def finalize(self, status: str = "success") -> None:
        """Nothing: the run ends when calolab's TrackedRun closes it."""
