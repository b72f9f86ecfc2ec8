"""The one rank flag: whether this process is the main process (global rank 0) of its training.

nanoGPT computes ``master_process`` once and asks it before every side effect; calolab asks
:func:`is_main_process` before opening the MLflow run, generating a sample, building the data
cache, evaluating, exporting and logging models. It answers before the process group exists
(the other ranks must not create runs or write samples while they start), from the variables
of the launchers Lightning's cluster environments read: ``torch.distributed`` once initialised;
else torchrun (``RANK``, TorchElasticEnvironment), ``srun`` (``SLURM_PROCID``, SLURMEnvironment)
and Lightning's own subprocess launcher (``LOCAL_RANK`` and ``NODE_RANK`` of the re-executed
ranks). A process that trains alone is the main process.

:func:`wait_for` is how the other ranks wait for what the main process makes (a sample, a
cache): polling a completeness check on the shared file system, which works before any process
group exists and across nodes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from calolab.errors import CalolabError

#: seconds the other ranks wait for the main process's sample or cache, unless overridden
WAIT_TIMEOUT_VARIABLE = "CALOLAB_RANK_WAIT_S"
DEFAULT_WAIT_S = 6 * 3600.0


class RankWaitTimeout(CalolabError, TimeoutError):
    """A non-main rank waited longer than its limit for something the main process makes."""


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def global_rank() -> int | None:
    """This process's global rank, 0 when it trains alone.

    In order: ``torch.distributed`` once initialised; ``RANK`` (torchrun, Kubeflow); a non-zero
    ``SLURM_PROCID`` (a task ``srun`` started; task 0 may still have started ranks of its own
    with Lightning's launcher, e.g. in an interactive allocation); ``LOCAL_RANK`` / ``NODE_RANK``
    (the ranks Lightning's subprocess launcher re-executes). None for a process known not to be
    rank 0 whose exact rank is not known before its process group exists (``NODE_RANK`` > 0 set
    by hand for a multi-node run without SLURM or torchrun).
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    rank = _env_int("RANK")
    if rank is not None:
        return rank
    procid = _env_int("SLURM_PROCID")
    if procid:
        return procid
    local, node = _env_int("LOCAL_RANK") or 0, _env_int("NODE_RANK") or _env_int("GROUP_RANK") or 0
    return local if node == 0 else None


def is_main_process() -> bool:
    """Whether this process is global rank 0: the one that tracks, generates, caches and exports."""
    return global_rank() == 0


def rank_label() -> str:
    """``"rank 1"`` (or ``"a rank of node 2"``) for messages naming this process."""
    rank = global_rank()
    return f"rank {rank}" if rank is not None else f"a rank of node {_env_int('NODE_RANK') or _env_int('GROUP_RANK')}"


def wait_for(ready: Callable[[], bool], what: str, timeout: float | None = None, poll: float = 1.0) -> None:
    """On a non-main rank: return once ``ready()`` is true, polling; raise after ``timeout`` seconds.

    Args:
        ready: the completeness check (e.g. the sample's manifest or the cache's meta file exists).
        what: named in the messages, e.g. ``"the data cache /data/cache/ab12"``.
        timeout: seconds; default ``$CALOLAB_RANK_WAIT_S`` or 6 hours (a full sample's generation).
        poll: seconds between checks.
    """
    if timeout is None:
        timeout = float(os.environ.get(WAIT_TIMEOUT_VARIABLE) or DEFAULT_WAIT_S)
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RankWaitTimeout(
                f"{rank_label()} waited {timeout:.0f} s for {what} that rank 0 makes; expected it to appear, but it "
                f"did not (did rank 0 fail? is the folder on a file system all nodes share?); ${WAIT_TIMEOUT_VARIABLE} "
                "sets the limit"
            )
        time.sleep(poll)
