"""What Hydra knows about the job a run is made in: its overrides and the multirun it belongs to.

A training composed by ``calolab train`` runs inside a Hydra job; ``HydraConfig`` then holds
the job's command-line overrides (what makes this run differ from the preset, used in run
names) and, in a multirun (``-m``: a grid with the basic launcher, or a sweep), the sweep
directory that every job of the multirun shares (a tag that groups the runs in the MLflow
UI). Outside a Hydra job (a config composed in a test or a script) there is neither.
"""

from __future__ import annotations

import os
from typing import Any

from omegaconf import DictConfig, OmegaConf

from calolab.keys import MULTIRUN_JOB_TAG, MULTIRUN_TAG


def current_hydra() -> DictConfig | None:
    """The running Hydra job's ``hydra`` config node, or None outside a Hydra job."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def task_overrides(hydra: DictConfig | None = None) -> list[str]:
    """The job's command-line overrides (``hydra.overrides.task``), as typed; [] outside Hydra."""
    hydra = current_hydra() if hydra is None else hydra
    if hydra is None:
        return []
    overrides = OmegaConf.select(hydra, "overrides.task", default=None)
    return [str(o) for o in overrides] if overrides is not None else []


def multirun_tags(hydra: DictConfig | None = None) -> dict[str, str]:
    """``{calolab.multirun: <sweep dir>, calolab.multirun.job: <n>}`` in a multirun, else {}.

    Args:
        hydra: a ``hydra`` config node (the sweeper's own, for a sweep's parent run); the
            running job's when None.
    """
    hydra = current_hydra() if hydra is None else hydra
    if hydra is None or not is_multirun(hydra.get("mode")):
        return {}
    sweep_dir = OmegaConf.select(hydra, "sweep.dir", default=None)
    if not sweep_dir:
        return {}
    tags = {MULTIRUN_TAG: os.path.abspath(str(sweep_dir))}
    job = OmegaConf.select(hydra, "job.num", default=None)
    if job is not None:
        tags[MULTIRUN_JOB_TAG] = str(job)
    return tags


def is_multirun(mode: Any) -> bool:
    """Whether a ``hydra.mode`` value is MULTIRUN."""
    from hydra.types import RunMode

    return mode == RunMode.MULTIRUN or str(mode) in ("MULTIRUN", "RunMode.MULTIRUN")
