"""Preemption: SIGTERM, SIGINT and SIGUSR1 stop a training with its state saved, not lost.

Batch systems end jobs with SIGTERM (time limit, preemption, ``scontrol requeue``), SLURM warns
with a signal chosen by ``sbatch --signal=USR1@<seconds>`` before the time limit, and a user at a
terminal presses Ctrl-C (SIGINT). :class:`Preemption` handles the three the same way. While the
training loop runs, the handler only records the signal; :class:`StopOnSignal` (a callback) asks
every DDP rank at each training batch end whether any of them has one
(one all-reduce) and, if so, all ranks raise Lightning's
``SIGTERMException`` after the same batch, so that no KeyboardInterrupt tears a batch apart and no
rank waits in a collective for another. The training then saves the state at that batch
(:class:`calolab.callbacks.RunCheckpoint`), logs it to the run, and ends the run KILLED with the
tag :data:`calolab.keys.INTERRUPTED_TAG`; the command exits with 128 + the signal's number.
Outside the training loop (data set-up, validation after the last batch, evaluation, export) the
signal raises :class:`Preempted` at once (or when ``fit`` returns): the run's latest checkpoint is
the one logged at the last epoch end.

Why not Lightning's own SIGTERM handling: its handler runs a ``broadcast`` inside the signal
handler. SLURM (``--signal``, ``scancel``, the time limit) and torchrun deliver the signal to every
rank, each at another point of its batch, so those broadcasts pair with whatever collective the
other rank runs (a gradient all-reduce, the next batch's broadcast) and the job hangs or dies with
a gloo/NCCL error (Lightning-AI/pytorch-lightning#20806). :class:`StopOnSignal` puts calolab's
handler back while the loop runs; the one collective it adds per batch is outside any handler.

Lightning's SLURM auto-requeue handles SIGUSR1 only when no handler is installed; calolab installs
its own, so the checkpoint goes to the run instead of a temporary folder, and requeues the job
itself once the run is closed (:func:`requeue_slurm_job`, the ``scontrol requeue`` Lightning runs).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading
from types import FrameType

import pytorch_lightning as pl

log = logging.getLogger(__name__)

#: the signals that stop a training with a checkpoint
SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1") if hasattr(signal, name)
)


class Preempted(KeyboardInterrupt):
    """The training was stopped by a signal; the run ends KILLED (a KeyboardInterrupt, as Ctrl-C).

    Attributes:
        signal_name: ``"SIGTERM"``, ``"SIGINT"`` or ``"SIGUSR1"``.
        where: ``"epoch 3/5, step 42 (2 epoch(s) complete)"`` (epochs numbered from 1), or "" when no training was running.
        run_id: the run to resume, once known.
        hint: what happens next, when not ``calolab train resume=<run_id>`` (a sweep trial: retried).
    """

    def __init__(self, signal_name: str, where: str = "", run_id: str | None = None):
        self.signal_name, self.where, self.run_id = signal_name, where, run_id
        self.hint = ""
        super().__init__(self.describe())

    def describe(self) -> str:
        return f"{self.signal_name} at {self.where}" if self.where else self.signal_name

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports a process ended by it."""
        return 128 + int(getattr(signal, self.signal_name, signal.SIGTERM))


class Preemption:
    """Within the block (main thread only), SIGTERM, SIGINT and SIGUSR1 stop the training gracefully.

    Records the first signal (:attr:`signal_name`); see the module docstring for what happens.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None
        #: True while :class:`StopOnSignal` stops the training loop at its next batch end
        self.in_loop = False
        self._previous: dict[signal.Signals, object] = {}

    def __enter__(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        return False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.signal_name is None
        if first:
            self.signal_name = signal.Signals(signum).name
            log.warning("received %s: stopping with a checkpoint", self.signal_name)
        if first and not self.in_loop:  # no training loop to stop gracefully: stop now
            raise Preempted(self.signal_name)

    def reinstall(self) -> None:
        """Put this handler back for the three signals (over the ones ``Trainer.fit`` installed)."""
        if self._previous and threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                signal.signal(sig, self._handle)

    def check(self) -> None:
        """Raise :class:`Preempted` when a signal came while the loop could not stop for it."""
        if self.signal_name is not None:
            raise Preempted(self.signal_name)

    def callback(self) -> StopOnSignal:
        """The callback that stops the training loop of this block's training."""
        return StopOnSignal(self)


class StopOnSignal(pl.Callback):
    """Stops every rank after the same training batch once any rank has received a signal.

    At ``on_train_start`` (after ``Trainer.fit`` installed Lightning's handlers) it puts
    :class:`Preemption`'s handler back, which then only records the signal; at every training batch
    end the ranks agree whether any of them has one (one all-reduce of the signal's number; nothing
    on one process) and all raise ``SIGTERMException`` together. Lightning restores the handlers it found
    (calolab's) when ``fit`` ends.
    """

    def __init__(self, preemption: Preemption) -> None:
        self.preemption = preemption

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.preemption.reinstall()
        self.preemption.in_loop = True

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        import torch
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        name = self.preemption.signal_name
        mine = int(getattr(signal, name)) if name else 0
        # the ranks' largest signal number (0: none): the same decision on every rank
        seen = int(trainer.strategy.reduce(torch.tensor(mine, device=trainer.strategy.root_device), reduce_op="max"))
        if seen:
            self.preemption.signal_name = name or signal.Signals(seen).name  # another rank's signal
            self.preemption.in_loop = False
            raise SIGTERMException()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.preemption.in_loop = False

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.preemption.in_loop = False


def slurm_job_id() -> str | None:
    """This SLURM job's id (``<array job>_<task>`` for an array task), None outside SLURM."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID") or None


def requeue_slurm_job(stopped: Preempted) -> str | None:
    """After SIGUSR1 in a SLURM job (``sbatch --signal=USR1@<s> --requeue``): ``scontrol requeue``
    the job, as Lightning's auto-requeue does; the requeued job resumes the run by itself. Returns
    a line saying what happened (None outside SLURM or for another signal)."""
    job = slurm_job_id()
    if stopped.signal_name != "SIGUSR1" or job is None:
        return None
    exe = shutil.which("scontrol")
    if exe is None:
        return f"SLURM job {job} not requeued: scontrol is not on PATH"
    result = subprocess.run([exe, "requeue", job], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return f"SLURM job {job} not requeued: scontrol requeue exited {result.returncode}: {result.stderr.strip()}"
    return f"SLURM job {job} requeued: it resumes the run when it starts again"
