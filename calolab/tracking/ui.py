"""How to open the MLflow UI on the store a run went to: the hint printed after a training.

``make ui`` opens the default store (``mlruns/mlflow.db`` in the repository) only; a run that
went to another SQLite file needs ``mlflow ui`` pointed at that file, and a run on a tracking
server is already browsable at the server's address. Credentials in a URI are never printed:
an ``http(s)://user:password@host`` address is shown without them, a database URI with them
masked.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from calolab.tracking.params import scrub_uri
from calolab.tracking.store import TrackingStore

#: where ``mlflow ui`` (and ``make ui``) serves by default
LOCAL_UI = "http://127.0.0.1:5000"


def ui_hint(
    store: TrackingStore,
    *,
    experiment_id: str | None = None,
    run_id: str | None = None,
    repo: Path | None = None,
    cwd: Path | None = None,
) -> str:
    """One or two lines telling how to see the run in the MLflow UI.

    Args:
        store: the store the run went to.
        experiment_id, run_id: the run, for a direct link (optional).
        repo: the repository whose ``make ui`` opens the default store (default: calolab's).
        cwd: the user's working directory (default: the current one), to say ``make -C``.
    """
    if repo is None:
        from calolab.app import ROOT_DIR

        repo = ROOT_DIR
    scheme = urlsplit(store.uri).scheme.lower()
    if scheme in ("http", "https"):
        base = _without_credentials(store.uri).rstrip("/")
        return f"open the MLflow UI at {base}{_run_link(experiment_id, run_id, base)}"
    if scheme == "databricks":
        return "open the run in your Databricks workspace's Experiments page"
    if scheme == "sqlite" and _is_default(store, repo):
        here = Path.cwd() if cwd is None else cwd
        make = "make ui" if here.resolve() == repo.resolve() else f"make -C {shlex.quote(str(repo))} ui"
        return f"open the MLflow UI with: {make}   (then {LOCAL_UI}{_run_link(experiment_id, run_id, LOCAL_UI)})"
    command = [_mlflow_executable(), "ui", "--backend-store-uri", scrub_uri(store.uri)]
    if store.artifact_root:
        command += ["--default-artifact-root", store.artifact_root]
    text = " ".join(shlex.quote(part) for part in command)
    masked = (
        ' (put the masked password back, or use "$MLFLOW_TRACKING_URI")' if scrub_uri(store.uri) != store.uri else ""
    )
    return f"open the MLflow UI with: {text}{masked}\n  (then {LOCAL_UI}{_run_link(experiment_id, run_id, LOCAL_UI)})"


def _is_default(store: TrackingStore, repo: Path) -> bool:
    """Whether ``store`` is the store ``make ui`` in ``repo`` opens."""
    if not (repo / "Makefile").is_file():
        return False
    default = TrackingStore(f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}", None)
    return _sqlite_path(store.uri) == _sqlite_path(default.uri)


def _sqlite_path(uri: str) -> str:
    return os.path.realpath(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else uri


def _mlflow_executable() -> str:
    """The ``mlflow`` script of this environment (the one calolab runs in), else ``mlflow``."""
    script = Path(sys.executable).with_name("mlflow")
    return str(script) if script.is_file() else "mlflow"


def _without_credentials(uri: str) -> str:
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


#: MLflow 3's UI keeps a per-browser GenAI / Model-training switch that starts on GenAI and then
#: shows an experiment's traces overview, whatever its experimentKind tag; this query parameter
#: opens the model-training view (runs table, models, registry) directly (seen in MLflow 3.17's UI)
TRAINING_VIEW = "?workflowType=machine_learning"


def _run_link(experiment_id: str | None, run_id: str | None, base: str) -> str:
    if not experiment_id:
        return ""
    runs = f"; the runs: {base}/#/experiments/{experiment_id}/runs{TRAINING_VIEW}"
    return runs + (f"; this run: {base}/#/experiments/{experiment_id}/runs/{run_id}{TRAINING_VIEW}" if run_id else "")
