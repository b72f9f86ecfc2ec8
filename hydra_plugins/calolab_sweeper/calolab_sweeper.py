"""The thin Hydra side of calolab's Optuna sweeper: a config schema and a Sweeper that delegates.

Registers ``hydra/sweeper: calolab`` (select it with ``override /hydra/sweeper: calolab``, as
the presets in ``conf/sweep/`` do). Key names follow the stock hydra-optuna-sweeper's
(``n_trials``, ``storage``, ``study_name``, ``direction``, ``params``); the logic lives in
:mod:`sweeps`.
"""

import sys
from dataclasses import dataclass, field
from typing import Any  # noqa: UP035 - OmegaConf reads these annotations

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class CalolabSweeperConf:
    _target_: str = "hydra_plugins.calolab_sweeper.calolab_sweeper.CalolabSweeper"
    metric: Any = "val/auc"  # a logged metric key, or a list of them (multi-objective)
    direction: Any = "maximize"  # maximize | minimize, or one per metric
    sampler: str = "tpe"  # tpe | random | cmaes | gp | nsga2
    sampler_options: dict[str, Any] = field(default_factory=dict)  # per sampler: {nsga2: {population_size: 8}}
    pruner: str | None = "median"  # median | hyperband | none
    pruner_options: dict[str, Any] = field(default_factory=dict)  # per pruner: {median: {n_warmup_steps: 1}}
    n_trials: int = 20  # trials this invocation adds to the study
    n_jobs: int = 1  # trials handed to the launcher at once
    timeout: float | None = None  # seconds; no new trial starts after it
    study_name: str | None = None  # default: experiment_name
    storage: str | None = None  # default: <hydra.sweep.dir>/optuna.journal; or an Optuna RDB URL
    max_failure_rate: float = 0.5  # stop once more than this fraction of n_trials failed
    seed: int | None = None  # the sampler's seed
    heartbeat_interval: int = 30  # s; RDB storages: a RUNNING trial's worker beats this often
    grace_period: int = 90  # s; RDB storages: a trial without a beat for this long is failed and retried
    params: dict[str, Any] = field(default_factory=dict)  # config path -> {type, low, high, log, step, choices}


ConfigStore.instance().store(group="hydra/sweeper", name="calolab", node=CalolabSweeperConf, provider="calolab")


class CalolabSweeper(Sweeper):
    """Hydra Sweeper over an Optuna study; see :func:`sweeps.run_sweep`."""

    def __init__(self, **settings: Any):
        from sweeps import SweepSettings

        self.settings = SweepSettings.from_config(settings)
        self.config: DictConfig | None = None
        self.launcher = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        """Run the study; a calolab error (bad settings, too many failures) is one line and an exit code."""
        from calolab.app import verbose
        from calolab.errors import CalolabError
        from calolab.secrets import mask
        from sweeps import run_sweep

        assert self.config is not None and self.launcher is not None
        try:
            return run_sweep(self.settings, self.config, self.launcher.launch, arguments)
        except CalolabError as err:
            if verbose():
                raise
            print(f"calolab train: error: {mask(str(err))}", file=sys.stderr)
            sys.exit(err.exit_code)
