"""A real MLflow tracking server for the tests: ``python -m calolab.server`` (the command ``make
server`` and docker/compose.yaml run) on a free port, its backend and user databases fresh on the
session's PostgreSQL (``postgres_url``), basic-auth on, artifacts proxied into a temporary folder.

``mlflow_server`` is session-scoped (registered in tests/conftest.py): one server for every test
that needs one, stopped and its databases dropped at the end. Its users: ``admin`` (the server's
admin), ``alice`` (a plain user: she creates the experiments she logs to and so manages them) and
``reader`` (a plain user with MLflow's default READ permission only). :meth:`MlflowServer.env`
gives the environment of a client signed in as one of them: credentials only through MLflow's
own variables.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from calolab.server import libpq_url, with_database

#: seconds the server may take to start (database migrations on a fresh database, a loaded machine)
START_TIMEOUT_S = 240
USERS = ("alice", "reader")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class MlflowServer:
    """A running server: its URL and the passwords of its users."""

    url: str
    passwords: dict[str, str]
    artifacts: Path
    log: Path
    proc: subprocess.Popen = field(repr=False)

    def env(self, user: str | None, password: str | None = None) -> dict[str, str]:
        """Client environment: the tracking URI and ``user``'s credentials (none for None)."""
        env = {"MLFLOW_TRACKING_URI": self.url, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
        if user is not None:
            env["MLFLOW_TRACKING_USERNAME"] = user
            env["MLFLOW_TRACKING_PASSWORD"] = password or self.passwords[user]
        return env

    def auth(self, user: str) -> tuple[str, str]:
        return user, self.passwords[user]

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:]


@contextmanager
def signed_in(server: MlflowServer, user: str | None, password: str | None = None) -> Iterator[None]:
    """This process's MLflow clients talk to ``server`` as ``user`` (MLflow's variables; they and
    MLflow's global tracking URI, which calolab's fluent calls set, are restored after)."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    uri_before, registry_before = tracking_utils._tracking_uri, registry_utils._registry_uri
    # a global URI an earlier test in this process set (calolab's fluent calls do) would win over the variable
    tracking_utils._tracking_uri = registry_utils._registry_uri = None
    keys = (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR",
    )
    old = {k: os.environ.get(k) for k in keys}
    for key in keys:
        os.environ.pop(key, None)
    os.environ.update(server.env(user, password))
    try:
        yield
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = uri_before, registry_before
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _wait_until_up(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the MLflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the MLflow server did not answer within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def _drop_databases(postgres_url: str, names: list[str]) -> None:
    import psycopg2

    conn = psycopg2.connect(libpq_url(with_database(postgres_url, "postgres")), connect_timeout=5)
    conn.autocommit = True
    with conn.cursor() as cur:
        for name in names:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # calolab.server forwards it to MLflow and its workers
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture(scope="session")
def mlflow_server(postgres_url, tmp_path_factory) -> Iterator[MlflowServer]:
    """The session's tracking server (see the module docstring)."""
    root = tmp_path_factory.mktemp("mlflow-server")
    tag = uuid.uuid4().hex[:10]
    databases = [f"calolab_server_{tag}", f"calolab_server_auth_{tag}"]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    passwords = {"admin": secrets.token_urlsafe(18), **{u: secrets.token_urlsafe(18) for u in USERS}}
    env = {
        **os.environ,
        "CALOLAB_SERVER_ENV_FILE": os.devnull,  # never a developer's docker/server.env
        "MLFLOW_BACKEND_STORE_URI": with_database(postgres_url, databases[0]),
        "CALOLAB_AUTH_DATABASE_URI": with_database(postgres_url, databases[1]),
        "MLFLOW_ARTIFACTS_DESTINATION": str(root / "artifacts"),
        "MLFLOW_HOST": "127.0.0.1",
        "MLFLOW_PORT": str(port),
        "CALOLAB_SERVER_WORKERS": "1",
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": passwords["admin"],
    }
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(key, None)
    log = root / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "calolab.server"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_until_up(url, proc, log)
        for user in USERS:
            resp = requests.post(
                f"{url}/api/2.0/mlflow/users/create",
                json={"username": user, "password": passwords[user]},
                auth=("admin", passwords["admin"]),
                timeout=30,
            )
            assert resp.status_code == 200, resp.text
        yield MlflowServer(url=url, passwords=passwords, artifacts=root / "artifacts", log=log, proc=proc)
    finally:
        _stop(proc)
        _drop_databases(postgres_url, databases)


@dataclass
class ServerSweep:
    """A two-trial sweep that ``alice`` logged to the server: its parent run and its trial runs."""

    server: MlflowServer
    root: Path
    parent_id: str
    trial_ids: list[str]
    experiment_id: str
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def server_sweep(mlflow_server, smoke_data, tmp_path_factory) -> ServerSweep:
    """``calolab train -m ... tracking=server sweep=photon_id`` with 2 one-epoch trials, as ``alice``
    (credentials from MLFLOW_TRACKING_USERNAME/PASSWORD only), run in an empty folder; the trials log
    their ONNX models (the promotions of tests/test_13_server.py use them)."""
    from mlflow import MlflowClient

    from tests.conftest import run_cli, smoke_args

    root = tmp_path_factory.mktemp("server-sweep")
    args = smoke_args(
        smoke_data,
        "tracking=server",
        "sweep=photon_id",
        "hydra.sweeper.n_trials=2",
        "trainer.max_epochs=1",
        f"paths.log_dir={root / 'logs'}",
        f"paths.mlruns_dir={root / 'mlruns'}",
    )
    res = run_cli("train", "-m", *args, cwd=root, env=mlflow_server.env("alice"), timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    with signed_in(mlflow_server, "alice"):
        client = MlflowClient(tracking_uri=mlflow_server.url)
        exp = client.get_experiment_by_name("photon_id")
        runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    trials = [r.info.run_id for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return ServerSweep(
        server=mlflow_server,
        root=root,
        parent_id=parents[0].info.run_id,
        trial_ids=sorted(trials),
        experiment_id=exp.experiment_id,
        stdout=res.stdout,
        stderr=res.stderr,
    )
