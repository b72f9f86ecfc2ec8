"""One MLflow run as a context manager that always ends in a terminal state.

A run that raises ends FAILED with the reason as the tag ``calolab.error`` and the traceback
as the artifact ``error.txt``; an interrupted one ends KILLED; only a run whose body completed
ends FINISHED. No run is ever left RUNNING by calolab.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from typing import Any

import mlflow

from calolab.tracking.store import TrackingStore

ERROR_TAG = "calolab.error"


class TrackedRun:
    """Start (or resume) an MLflow run; close it FINISHED, FAILED or KILLED.

    Args:
        store: where to track.
        experiment: MLflow experiment name (created if missing).
        run_name: display name of the run.
        tags: tags set at creation.
        run_id: resume this existing run instead of creating one (``calolab evaluate``).
        nested: create the run as a child of the active run (sweeps).
    """

    def __init__(
        self,
        store: TrackingStore,
        experiment: str,
        *,
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        nested: bool = False,
    ):
        self.store, self.experiment = store, experiment
        self.run_name, self.tags = run_name, {k: str(v) for k, v in (tags or {}).items()}
        self.run_id, self.nested = run_id, nested
        self._run = None

    def __enter__(self) -> TrackedRun:
        mlflow.set_tracking_uri(self.store.uri)
        if self.run_id is not None:
            self._run = mlflow.start_run(run_id=self.run_id, nested=self.nested)
        else:
            exp_id = self.store.experiment_id(self.experiment)
            self._run = mlflow.start_run(
                experiment_id=exp_id, run_name=self.run_name, tags=self.tags, nested=self.nested
            )
            self.run_id = self._run.info.run_id
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            mlflow.end_run("FINISHED")
            return False
        status = "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
        try:
            reason = f"{exc_type.__name__}: {exc}"
            mlflow.set_tag(ERROR_TAG, reason[:5000])
            mlflow.log_text("".join(traceback.format_exception(exc_type, exc, tb)), "error.txt")
        except Exception:  # never mask the original error with a tracking error
            pass
        finally:
            mlflow.end_run(status)
        return False
