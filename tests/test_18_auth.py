"""Issue 18: the shared tracking stack lets in only the people it should.

The compose file publishes no database port and holds no password; the server refuses to start
without a strong admin password; against the session's real server (tests/mlflow_server.py,
basic-auth on): an unauthenticated request is refused, ``calolab train`` with a wrong password or
an unreachable server ends in one line within seconds and writes no local store, and with the
right password (``alice``'s sweep, ``server_sweep``) the runs are logged.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import requests
import yaml

from calolab.app import ROOT_DIR
from calolab.server import WELL_KNOWN_PASSWORDS, ServerConfigError, ServerSettings
from tests.conftest import run_cli, smoke_args
from tests.mlflow_server import free_port

PASSWORD_KEY = ("PASSWORD", "SECRET", "TOKEN")


def _values(node, path=""):
    """Every (path, scalar) of a parsed YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _values(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _values(value, f"{path}[{i}]")
    else:
        yield path, node


@pytest.mark.parametrize("name", ["compose.yaml", "compose.optuna-remote.yaml"])
def test_compose_files_hold_no_password(name):
    text = (ROOT_DIR / "docker" / name).read_text()
    doc = yaml.safe_load(text)
    for path, value in _values(doc):
        assert not any(k in path.upper() for k in PASSWORD_KEY), f"{name}: literal secret at {path}"
        assert "://" not in str(value) or "@" not in str(value), f"{name}: credentials in a URL at {path}"
    assert "calolab:calolab" not in text and "POSTGRES_PASSWORD:" not in text


def test_compose_publishes_no_database_port_and_mlflow_on_localhost():
    services = yaml.safe_load((ROOT_DIR / "docker" / "compose.yaml").read_text())["services"]
    assert "ports" not in services["postgres"] and "network_mode" not in services["postgres"]
    (published,) = services["mlflow"]["ports"]
    assert published.startswith("${MLFLOW_PUBLISH:-127.0.0.1}:")
    # the opt-in override publishes it, with the Optuna-only role's init script
    remote = yaml.safe_load((ROOT_DIR / "docker" / "compose.optuna-remote.yaml").read_text())["services"]["postgres"]
    assert remote["ports"] and any("optuna.sh" in v for v in remote["volumes"])
    script = (ROOT_DIR / "docker" / "initdb" / "optuna.sh").read_text()
    assert (
        "NOSUPERUSER NOCREATEDB NOCREATEROLE" in script and 'REVOKE ALL ON DATABASE :"mlflow_db" FROM PUBLIC' in script
    )
    # the env file with the real values is git-ignored, its example holds none
    ignored = subprocess.run(["git", "check-ignore", "-q", "docker/server.env"], cwd=ROOT_DIR)
    assert ignored.returncode == 0
    example = (ROOT_DIR / "docker" / "server.env.example").read_text().splitlines()
    secrets = [line for line in example if line.split("=")[0].endswith("PASSWORD") and not line.startswith("#")]
    assert secrets and all(line.endswith("=") for line in secrets)


@pytest.mark.parametrize("password", [None, "", "password1234", "admin", "calolab", "Password", "short-1"])
def test_server_refuses_missing_or_well_known_admin_password(password):
    env = {"CALOLAB_SERVER_ENV_FILE": os.devnull}
    if password is not None:
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = password
    with pytest.raises(ServerConfigError, match="admin password"):
        ServerSettings.from_env(env).check()
    assert "password1234" in WELL_KNOWN_PASSWORDS  # MLflow's old default
    with pytest.raises(ServerConfigError, match="well-known database password"):
        ServerSettings.from_env({**env, "MLFLOW_AUTH_ADMIN_PASSWORD": "x" * 20, "POSTGRES_PASSWORD": "calolab"}).check()


def test_server_command_refuses_to_start_in_one_line(tmp_path):
    """``python -m calolab.server`` (make server, compose) with MLflow's old default: exit 2, one line, no server."""
    env_file = tmp_path / "server.env"
    env_file.write_text("# a site's file\nMLFLOW_AUTH_ADMIN_PASSWORD=password1234\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CALOLAB_", "POSTGRES_"))}
    env["CALOLAB_SERVER_ENV_FILE"] = str(env_file)
    res = subprocess.run([sys.executable, "-m", "calolab.server"], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("calolab server: error: refusing to start with a well-known admin password")
    assert "mlflow server" not in res.stdout


@pytest.mark.postgres
def test_unauthenticated_and_wrong_password_requests_are_refused(mlflow_server):
    url = f"{mlflow_server.url}/api/2.0/mlflow/experiments/search"
    assert requests.get(url, params={"max_results": 1}, timeout=30).status_code == 401
    assert (
        requests.get(url, params={"max_results": 1}, auth=("alice", "wrong-password!"), timeout=30).status_code == 401
    )
    assert requests.get(url, params={"max_results": 1}, auth=mlflow_server.auth("alice"), timeout=30).status_code == 200
    assert requests.get(f"{mlflow_server.url}/health", timeout=30).status_code == 200  # health stays open


def _train_fails_in_one_line(smoke_data, tmp_path, env: dict, uri: str) -> tuple[str, float]:
    """``calolab train tracking.uri=<uri>`` in an empty folder: exit 2, one error line, no local store."""
    args = smoke_args(smoke_data, f"tracking.uri={uri}", f"paths.mlruns_dir={tmp_path / 'mlruns'}")
    clean = {k: "" for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")}
    start = time.monotonic()
    res = run_cli("train", *args, cwd=tmp_path, env={**clean, **env}, timeout=300)
    elapsed = time.monotonic() - start
    assert res.returncode == 2, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "Traceback" not in res.stderr + res.stdout, res.stderr[-3000:]
    assert not (tmp_path / "mlruns").exists() and not list(tmp_path.rglob("mlflow.db"))
    return errors[0], elapsed


@pytest.mark.postgres
def test_train_with_a_wrong_password_ends_in_one_line(mlflow_server, server_sweep, smoke_data, tmp_path):
    """Wrong password: one line, non-zero, nothing local. The right one (alice's sweep) logged its runs."""
    line, _ = _train_fails_in_one_line(
        smoke_data, tmp_path, mlflow_server.env("alice", "not-alices-password"), mlflow_server.url
    )
    assert line.startswith(f"calolab train: error: the MLflow tracking server at {mlflow_server.url} refused")
    assert "user 'alice'" in line and "HTTP 401" in line and "MLFLOW_TRACKING_PASSWORD" in line
    assert "not-alices-password" not in line
    assert len(server_sweep.trial_ids) == 2  # alice, with her password, logged a parent and two trials


def test_an_unreachable_server_ends_in_one_line_within_seconds(tmp_path):
    """Today's complaint: ~2 minutes of retries, then a 150-line traceback. The check is the one every
    command passes through before its first request (``TrackingStore.client``, e.g. when a training
    opens its experiment); the command line turns the error into its one line, as for the wrong
    password above."""
    from calolab.tracking import TrackingStore
    from calolab.tracking.access import ServerUnreachableError

    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    store = TrackingStore.resolve(uri, tmp_path / "mlruns")
    start = time.monotonic()
    with pytest.raises(ServerUnreachableError) as err:
        store.experiment_id("photon_id")
    assert time.monotonic() - start < 5
    assert str(err.value) == (
        f"cannot reach the MLflow tracking server at {uri}: connection refused; is it running "
        "(make server, docker compose -f docker/compose.yaml up) and is tracking.uri / MLFLOW_TRACKING_URI right?"
    )
    assert "\n" not in str(err.value) and not (tmp_path / "mlruns").exists()


def test_a_password_in_the_tracking_uri_is_refused(tmp_path):
    from calolab.tracking import TrackingStore
    from calolab.tracking.access import ServerAuthError

    with pytest.raises(ServerAuthError, match="must not carry a password") as err:
        TrackingStore.resolve("http://alice:hunter2-secret@127.0.0.1:1", tmp_path).client()
    assert "hunter2-secret" not in str(err.value)
