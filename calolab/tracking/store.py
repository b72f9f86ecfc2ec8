"""Where runs are tracked: the explicit local default or a shared MLflow server.

The default is MLflow on SQLite inside ``mlruns/`` (metadata ``mlruns/mlflow.db``, artifacts
under ``mlruns/artifacts/<experiment>``), set explicitly rather than left to MLflow's own
defaults, which depend on the working directory. ``tracking.uri=`` or ``MLFLOW_TRACKING_URI``
points calolab at a shared server (``mlflow server`` backed by PostgreSQL) instead; the server
then decides where artifacts go. A server is checked before first use
(:mod:`calolab.tracking.access`): unreachable, credentials refused or a missing permission on the
experiment end in one line within seconds; nothing falls back to a local store. Experiments are tagged as training experiments
(``mlflow.experimentKind=custom_model_development``), so that MLflow 3's UI opens its runs
view rather than the GenAI one, and carry their preset's description.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from calolab.errors import ConfigError
from calolab.keys import EXPERIMENT_KIND_TAG, NOTE_TAG, TRAINING_EXPERIMENT_KIND
from calolab.tracking import access


@dataclass(frozen=True)
class TrackingStore:
    """A resolved tracking location.

    Args:
        uri: the MLflow tracking URI.
        artifact_root: where new experiments keep artifacts (local stores only; None lets a
            tracking server decide).
    """

    uri: str
    artifact_root: str | None

    @classmethod
    def resolve(cls, uri: str | None, mlruns_dir: str | os.PathLike) -> TrackingStore:
        """``uri`` if given, else ``$MLFLOW_TRACKING_URI``, else SQLite in ``mlruns_dir``."""
        uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or None
        if uri is None:
            root = Path(mlruns_dir).expanduser().resolve()
            root.mkdir(parents=True, exist_ok=True)
            return cls(f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri())
        if "://" not in uri:
            raise ConfigError(
                f"tracking.uri must be a URI such as sqlite:///path/mlflow.db, http://host:5000 or "
                f"postgresql://..., but got tracking.uri={uri!r}"
            )
        if uri.startswith("sqlite:///"):
            db = Path(uri.removeprefix("sqlite:///"))
            db.parent.mkdir(parents=True, exist_ok=True)
            return cls(uri, (db.parent / "artifacts").as_uri())
        if uri.startswith("file:"):
            raise ConfigError(
                "tracking.uri=file:... (MLflow's file store) is not supported: use sqlite:///<dir>/mlflow.db "
                "or a tracking server"
            )
        return cls(uri, None)

    def check(self) -> access.ServerUser | None:
        """For a tracking server: that it answers and takes our credentials (once per process); who we are."""
        return access.check_server(self.uri) if access.is_http(self.uri) else None

    def require(self, resource_type: str, resource_id: str, need: str, label: str, action: str) -> None:
        """Refuse in one line when the server's user has less than ``need`` on a resource (no-op for local stores)."""
        access.require(self.uri, resource_type, resource_id, need, label, action)

    def client(self):
        from mlflow.tracking import MlflowClient

        self.check()
        return MlflowClient(tracking_uri=self.uri)

    def experiment_id(self, name: str, description: str | None = None) -> str:
        """The id of experiment ``name``, created (with this store's artifact root) if new.

        The experiment is tagged as a training experiment (``mlflow.experimentKind``, which
        decides the page MLflow 3's UI opens) and, when ``description`` is given, described
        by it (``mlflow.note.content``). An existing experiment (e.g. made by an older
        calolab) gets the kind tag and the description when it has none; tags a user set are
        never overwritten.
        """
        client = self.client()
        exp = client.get_experiment_by_name(name)
        if exp is None:
            location = f"{self.artifact_root}/{name}" if self.artifact_root else None
            tags = {EXPERIMENT_KIND_TAG: TRAINING_EXPERIMENT_KIND}
            if description:
                tags[NOTE_TAG] = description
            try:
                return client.create_experiment(name, artifact_location=location, tags=tags)
            except Exception as err:  # created concurrently by another worker
                exp = client.get_experiment_by_name(name)
                if exp is None:
                    if getattr(err, "error_code", None) == "PERMISSION_DENIED":
                        raise access.PermissionDeniedError(
                            f"the tracking server {access.base_url(self.uri)} does not let this user create "
                            f"experiment {name!r}; ask an admin to create it and grant you EDIT on it"
                        ) from None
                    raise
        self.require("experiment", exp.experiment_id, "EDIT", f"experiment {name!r}", "log runs to it")
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        missing = {EXPERIMENT_KIND_TAG: TRAINING_EXPERIMENT_KIND, NOTE_TAG: description}
        for key, value in missing.items():
            if value and not exp.tags.get(key):
                client.set_experiment_tag(exp.experiment_id, key, value)
        return exp.experiment_id
