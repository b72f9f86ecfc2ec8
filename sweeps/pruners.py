"""Pruner factory: a name from ``hydra.sweeper.pruner`` -> one of Optuna's pruners.

The median rule is the default; Hyperband spends the epoch budget by successive halving;
``threshold`` stops a trial whose metric leaves a fixed range (``{threshold: {lower: 0.6,
n_warmup_steps: 2}}``: a val/auc still below 0.6 after two epochs); ``none`` disables pruning. Multi-objective studies cannot prune (Optuna reports one value).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import optuna

from calolab.errors import ConfigError, suggest

PRUNERS: dict[str, Callable[..., optuna.pruners.BasePruner]] = {
    "median": optuna.pruners.MedianPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "threshold": optuna.pruners.ThresholdPruner,
    "none": optuna.pruners.NopPruner,
}


def make_pruner(name: str | None, *, options: Mapping[str, Any] | None = None) -> optuna.pruners.BasePruner:
    """The pruner called ``name`` (``None``/``none``/``nop``: no pruning).

    Args:
        name: median, hyperband, threshold or none.
        options: constructor arguments per pruner name (``{median: {n_startup_trials: 3}}``), so
            that switching ``hydra.sweeper.pruner`` never passes one pruner's arguments to another.
    """
    key = "none" if name is None else str(name).lower()
    key = "none" if key in ("nop", "null") else key
    if key not in PRUNERS:
        raise ConfigError(
            f"hydra.sweeper.pruner: unknown pruner {name!r}{suggest(key, PRUNERS)} (options: {', '.join(PRUNERS)})"
        )
    try:
        return PRUNERS[key](**dict((options or {}).get(key) or {}))
    except TypeError as err:
        raise ConfigError(f"hydra.sweeper.pruner_options for {name!r}: {err}") from err
