"""Optuna sweeps: search spaces, storages, pruning, trial hand-off, study reports.

The Hydra plugin in ``hydra_plugins/calolab_sweeper`` is a thin shell around :func:`run_sweep`;
everything a sweep does lives here, one concept per module: :mod:`sweeps.space` (search
spaces), :mod:`sweeps.samplers` and :mod:`sweeps.pruners` (factories over Optuna's),
:mod:`sweeps.storage` (journal file or RDB URL), :mod:`sweeps.trial` (the hand-off of a trial
to the training process: pruning callback and child MLflow run), :mod:`sweeps.report` (the
parent MLflow run and its plots) and :mod:`sweeps.loop` (the ask / launch / tell loop).
"""

from sweeps.errors import SweepError
from sweeps.loop import SweepSettings, run_sweep

__all__ = ["SweepError", "SweepSettings", "run_sweep"]
