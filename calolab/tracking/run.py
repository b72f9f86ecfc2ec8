"""One MLflow run as a context manager that always ends in a terminal state.

A new run is named by :func:`calolab.tracking.naming.run_name` unless a name is given, and
tagged with the Hydra multirun it belongs to. A run that raises ends FAILED with the reason as
the tag ``calolab.error`` and the traceback as the artifact ``error.txt``; an interrupted one
ends KILLED; only a run whose body completed ends FINISHED. No run is ever left RUNNING by
calolab.

Resuming an interrupted training (``calolab train resume=<run_id>``, ``resume=True``) continues
the run as if it were new: it is RUNNING again, and ends FINISHED, KILLED or FAILED as above. A
stop by a signal (:class:`calolab.pipeline.preemption.Preempted`, a KeyboardInterrupt) ends it KILLED.

Re-opening an earlier run (``calolab evaluate/export run_id=...``) is different: the run keeps
the status and end time it had (a FINISHED training stays FINISHED, whatever happens to the
re-evaluation), and a failed or interrupted re-evaluation is recorded beside it, as the tag
``calolab.reevaluation_error`` and the artifact ``reevaluation_error.txt``. While the run is
open MLflow shows it RUNNING; its previous status is kept in a tag meanwhile, so that a
re-evaluation killed without a chance to clean up (SIGKILL) is repaired by the next one.

Under DDP only the main process (:func:`calolab.ranks.is_main_process`) creates the run. While it
is open its id is exported as ``$CALOLAB_RUN_ID``, which the ranks Lightning's launcher starts
inherit; ranks started by ``srun`` or torchrun learn it later (:meth:`TrackedRun.follow`, from a
broadcast once the process group exists). On the other ranks a TrackedRun writes nothing, unless
their training fails: then that rank ends the run FAILED itself, with its reason, since the main
process may be blocked in a collective or killed by Lightning's launcher. The first failure
recorded is the reason; a later one (rank 0 losing its peer) keeps it and adds its traceback.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import mlflow

from calolab.errors import CalolabError
from calolab.keys import (
    ERROR_TAG,
    REEVALUATION_ERROR_ARTIFACT,
    REEVALUATION_ERROR_TAG,
    REOPENED_STATUS_TAG,
)
from calolab.ranks import is_main_process, rank_label
from calolab.tracking.hydra_job import multirun_tags
from calolab.tracking.naming import run_name as default_run_name
from calolab.tracking.params import scrub_uri
from calolab.tracking.store import TrackingStore

__all__ = ["ERROR_TAG", "RunNotFoundError", "TrackedRun"]

#: MLflow's longest tag value; reasons are cut to this
MAX_REASON = 5000
URI_VARIABLE = "MLFLOW_TRACKING_URI"
#: the id of the run the ranks of this training belong to (exported by the main process)
RUN_ID_VARIABLE = "CALOLAB_RUN_ID"


class RunNotFoundError(CalolabError, LookupError):
    """The requested MLflow run (to re-open or restore), or one of its artifacts, does not exist."""


class TrackedRun:
    """Start a new MLflow run, or re-open an existing one, and always close it properly.

    Args:
        store: where to track.
        experiment: MLflow experiment name (created if missing); not needed to re-open a run.
        run_name: display name of a new run; None names it after the experiment, the job's
            overrides, the time and a random suffix.
        tags: tags set at creation.
        run_id: re-open this existing run instead of creating one (``calolab evaluate``); it
            keeps its status and end time.
        nested: create the run as a child of the active run.
        resume: with ``run_id``: continue that run's training (``calolab train resume=...``): it is
            RUNNING again and ends by this training's outcome, not with its earlier status.
        description: the experiment's description, set when calolab creates the experiment.
    """

    def __init__(
        self,
        store: TrackingStore,
        experiment: str | None = None,
        *,
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        nested: bool = False,
        description: str | None = None,
        resume: bool = False,
    ):
        if experiment is None and run_id is None:
            raise ValueError("TrackedRun needs an experiment (new run) or a run_id (re-opened run)")
        self.store, self.experiment = store, experiment
        self.run_name, self.tags = run_name, {k: str(v) for k, v in (tags or {}).items()}
        self.run_id, self.nested, self.description = run_id, nested, description
        self.resumed = resume and run_id is not None
        self.reopened = run_id is not None and not self.resumed
        # decided once: the other DDP ranks of a new run only record their failure in it
        self.follower = not self.reopened and not is_main_process()
        self._previous: tuple[str, int | None] | None = None  # status and end time of a re-opened run
        self._env_uri: str | None = None
        self._env_run_id: str | None = None
        self._run = None

    def follow(self, run_id: str | None) -> None:
        """On another rank: the id of the main process's run (where this rank's failure goes)."""
        if self.follower and run_id:
            self.run_id = run_id

    def __enter__(self) -> TrackedRun:
        if self.follower:
            self.run_id = os.environ.get(RUN_ID_VARIABLE) or self.run_id
            return self
        # MLflow also exports the URI as $MLFLOW_TRACKING_URI; given back on exit, so that a later
        # TrackingStore.resolve in this process does not take this store for the user's choice
        self._env_uri = os.environ.get(URI_VARIABLE)
        mlflow.set_tracking_uri(self.store.uri)
        try:
            if self.reopened:
                self._reopen()
            else:
                self._start()
        except BaseException:
            self._restore_env()
            raise
        return self

    def _start(self) -> None:
        if self.resumed:
            client = self.store.client()
            # the earlier stop's reason: this attempt records its own
            if ERROR_TAG in client.get_run(self.run_id).data.tags:
                client.delete_tag(self.run_id, ERROR_TAG)
            self._run = mlflow.start_run(run_id=self.run_id, nested=self.nested)
            if self.tags:
                mlflow.set_tags(self.tags)
            self._env_run_id = os.environ.get(RUN_ID_VARIABLE)
            os.environ[RUN_ID_VARIABLE] = self.run_id
            return
        exp_id = self.store.experiment_id(self.experiment, description=self.description)
        self.run_name = self.run_name or default_run_name(self.experiment)
        tags = {**multirun_tags(), **self.tags}
        self._run = mlflow.start_run(experiment_id=exp_id, run_name=self.run_name, tags=tags, nested=self.nested)
        self.run_id = self._run.info.run_id
        self._env_run_id = os.environ.get(RUN_ID_VARIABLE)
        os.environ[RUN_ID_VARIABLE] = self.run_id  # inherited by the ranks Lightning starts

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.follower:
            if exc_type is not None and self.run_id:
                self._record_rank_failure(exc_type, exc, tb)
            return False
        try:
            if self.reopened:
                self._close_reopened(exc_type, exc, tb)
            else:
                self._close(exc_type, exc, tb)
        finally:
            self._restore_env()
        return False

    def _restore_env(self) -> None:
        if self._env_uri is None:
            os.environ.pop(URI_VARIABLE, None)
        else:
            os.environ[URI_VARIABLE] = self._env_uri
        if self.run_id is not None and os.environ.get(RUN_ID_VARIABLE) == self.run_id:
            if self._env_run_id is None:
                os.environ.pop(RUN_ID_VARIABLE, None)
            else:
                os.environ[RUN_ID_VARIABLE] = self._env_run_id

    def _close(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            mlflow.end_run("FINISHED")
            return
        status = _end_status(exc_type)
        try:
            if ERROR_TAG not in self.store.client().get_run(self.run_id).data.tags:  # another rank failed first
                mlflow.set_tag(ERROR_TAG, _reason(exc_type, exc))
            mlflow.log_text(_traceback(exc_type, exc, tb), "error.txt")
        except Exception:  # never mask the original error with a tracking error
            pass
        finally:
            mlflow.end_run(status)

    def _record_rank_failure(self, exc_type, exc, tb) -> None:
        """Another rank failed: its reason (unless one is recorded already) and traceback, then FAILED."""
        label = rank_label()
        status = _end_status(exc_type)
        try:
            client = self.store.client()
            if ERROR_TAG not in client.get_run(self.run_id).data.tags:
                client.set_tag(self.run_id, ERROR_TAG, f"{label}: {_reason(exc_type, exc)}"[:MAX_REASON])
            text = _traceback(exc_type, exc, tb)
            client.log_text(self.run_id, text, f"error_{label.replace(' ', '_')}.txt")
            client.set_terminated(self.run_id, status)
        except Exception:  # never mask the original error with a tracking error
            pass

    # -- re-opened runs ------------------------------------------------------------------------
    def _reopen(self) -> None:
        from mlflow.exceptions import MlflowException

        client = self.store.client()
        try:
            info = client.get_run(self.run_id)
        except MlflowException as err:
            raise RunNotFoundError(f"no MLflow run {self.run_id!r} in {scrub_uri(self.store.uri)}") from err
        status = info.info.status
        left = info.data.tags.get(REOPENED_STATUS_TAG)
        if status == "RUNNING" and left:  # an earlier re-evaluation was killed while it had the run open
            status = left
        self._previous = (status, info.info.end_time)
        client.set_tag(self.run_id, REOPENED_STATUS_TAG, status)
        try:
            self._run = mlflow.start_run(run_id=self.run_id, nested=self.nested)
        except BaseException:
            client.delete_tag(self.run_id, REOPENED_STATUS_TAG)
            raise
        self.experiment = self.experiment or client.get_experiment(info.info.experiment_id).name

    def _close_reopened(self, exc_type, exc, tb) -> None:
        """Record the outcome beside the run, then give it back its status and end time."""
        status, end_time = self._previous
        client = self.store.client()
        try:
            if exc_type is None:
                if REEVALUATION_ERROR_TAG in client.get_run(self.run_id).data.tags:
                    client.delete_tag(self.run_id, REEVALUATION_ERROR_TAG)  # an older failure is stale now
            else:
                client.set_tag(self.run_id, REEVALUATION_ERROR_TAG, _reason(exc_type, exc))
                text = _traceback(exc_type, exc, tb)
                client.log_text(self.run_id, text, REEVALUATION_ERROR_ARTIFACT)
        except Exception:  # never mask the original error with a tracking error
            pass
        finally:
            mlflow.end_run(status)  # leaves the fluent API's run stack
            client.set_terminated(self.run_id, status, end_time=end_time)
            client.delete_tag(self.run_id, REOPENED_STATUS_TAG)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (a batch system's time limit) raises KeyboardInterrupt.

    So that a run closes properly (KILLED, or a re-opened run's status restored) instead of the
    process dying with the run left RUNNING. Does nothing outside the main thread or when
    SIGTERM already has a handler.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) not in (
        signal.SIG_DFL,
        None,
    ):
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"terminated by signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _end_status(exc_type) -> str:
    """KILLED for an interruption (Ctrl-C, SIGTERM under :func:`sigterm_as_interrupt`, or Lightning's
    ``SIGTERMException``: a batch system's time limit or ``scontrol requeue``), else FAILED."""
    if issubclass(exc_type, KeyboardInterrupt):
        return "KILLED"
    lightning = sys.modules.get("pytorch_lightning.utilities.exceptions")  # imported when Lightning trained
    if lightning is not None and issubclass(exc_type, lightning.SIGTERMException):
        return "KILLED"
    return "FAILED"


def _traceback(exc_type, exc, tb) -> str:
    """The traceback as logged (``error.txt``): credentials in its messages masked."""
    from calolab.secrets import mask

    return mask("".join(traceback.format_exception(exc_type, exc, tb)))


def _reason(exc_type, exc) -> str:
    text = f"{exc_type.__name__}: {exc}" if str(exc) else exc_type.__name__
    return scrub_uri(text)[:MAX_REASON]
