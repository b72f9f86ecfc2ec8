"""Sampler factory: a name from ``hydra.sweeper.sampler`` -> one of Optuna's samplers.

TPE is the default; CMA-ES and GP suit continuous spaces; NSGA-II is the multi-objective
genetic sampler (TPE handles several objectives too); random is the baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import optuna

from calolab.errors import ConfigError, suggest

SAMPLERS: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "gp": optuna.samplers.GPSampler,
    "nsga2": optuna.samplers.NSGAIISampler,
}
SINGLE_OBJECTIVE_ONLY = {"cmaes"}


def make_sampler(
    name: str, *, seed: int | None = None, n_objectives: int = 1, options: Mapping[str, Any] | None = None
) -> optuna.samplers.BaseSampler:
    """The sampler called ``name`` (case-insensitive; ``nsgaii``/``cma-es`` accepted); ``options``
    holds constructor arguments per sampler name (``{nsga2: {population_size: 8}}``)."""
    key = str(name).lower().replace("-", "").replace("_", "").replace("nsgaii", "nsga2")
    if key not in SAMPLERS:
        raise ConfigError(
            f"hydra.sweeper.sampler: unknown sampler {name!r}{suggest(key, SAMPLERS)} (options: {', '.join(SAMPLERS)})"
        )
    if n_objectives > 1 and key in SINGLE_OBJECTIVE_ONLY:
        raise ConfigError(f"hydra.sweeper.sampler: {name!r} optimises one objective, but got {n_objectives} metrics")
    try:
        return SAMPLERS[key](seed=seed, **dict((options or {}).get(key) or {}))
    except TypeError as err:
        raise ConfigError(f"hydra.sweeper.sampler_options for {name!r}: {err}") from err
