"""Preemption: SIGTERM, SIGINT and SIGUSR1 stop a training with its state saved, not lost.

Batch systems end jobs with SIGTERM (time limit, preemption, ``scontrol requeue``), SLURM warns
with a signal chosen by ``sbatch --signal=USR1@<seconds>`` before the time limit, and a user at a
terminal presses Ctrl-C (SIGINT). :class:`Preemption` handles the three the same way, through
Lightning's own graceful stop: while ``Trainer.fit`` runs, Lightning's SIGTERM handler is installed
(it stops every DDP rank together at the next batch, raising ``SIGTERMException``); SIGINT and
SIGUSR1 are handed to it as SIGTERM, so that no KeyboardInterrupt tears a batch apart. The
training then saves the state at that batch (:class:`calolab.callbacks.RunCheckpoint`), logs it to
the run, and ends the run KILLED with the tag :data:`calolab.keys.INTERRUPTED_TAG`; the command
exits with 128 + the signal's number. Outside ``fit`` (data set-up, evaluation, export) the signal
raises :class:`Preempted` at once: the run's latest checkpoint is the one logged at the last epoch
end.

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
        term = signal.getsignal(signal.SIGTERM)
        if callable(term) and term != self._handle:  # Trainer.fit runs: Lightning stops at the next batch
            if signum != signal.SIGTERM:
                term(signal.SIGTERM, frame)
            return
        if first:  # no training loop to stop gracefully: stop now
            raise Preempted(self.signal_name)


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
