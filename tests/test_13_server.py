"""Issue 13, a real tracking server: ``make server`` and docker/compose.yaml are one definition,
and a sweep, concurrent promotions and loading the champion work through a server that the tests
start (``python -m calolab.server`` on the session's PostgreSQL, basic-auth on; tests/mlflow_server.py).

The sweep (2 one-epoch trials, as user ``alice``) is the session's ``server_sweep``; its two trials
are the candidates of two promotions started at the same moment.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from calolab.app import ROOT_DIR
from calolab.registry import EXIT_REFUSED
from calolab.server import ServerSettings, server_command
from tests.mlflow_server import signed_in

pytestmark = pytest.mark.postgres
MODEL = "photon_id_server"


def compose() -> dict:
    return yaml.safe_load((ROOT_DIR / "docker" / "compose.yaml").read_text())


def make_recipe(target: str) -> list[str]:
    """The recipe lines of ``target`` in the Makefile."""
    lines = (ROOT_DIR / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"^{target}\s*:", line))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def test_compose_and_make_server_run_one_definition():
    """Both run ``python -m calolab.server``, which builds the one ``mlflow server`` command line."""
    service = compose()["services"]["mlflow"]
    (recipe,) = make_recipe("server")
    assert (
        shlex.split(recipe.replace("$(BIN)/python", "python"))
        == service["command"]
        == [
            "python",
            "-m",
            "calolab.server",
        ]
    )
    assert "server" in re.search(r"^\.PHONY:(.*)$", (ROOT_DIR / "Makefile").read_text(), re.M).group(1).split()
    # the command it builds: PostgreSQL backend (via MLflow's variable), proxied artifacts, basic-auth on
    settings = ServerSettings.from_env(
        {
            "CALOLAB_SERVER_ENV_FILE": os.devnull,
            **{k: str(v) for k, v in service["environment"].items()},
            "POSTGRES_USER": "calolab",
            "POSTGRES_PASSWORD": "a-long-random-db-password",
            "MLFLOW_AUTH_ADMIN_PASSWORD": "a-long-random-admin-password",
        }
    )
    settings.check()
    cmd = server_command(settings, executable="mlflow")
    assert cmd[:2] == ["mlflow", "server"] and "--serve-artifacts" in cmd
    assert cmd[cmd.index("--artifacts-destination") + 1] == "/mlartifacts"
    assert cmd[cmd.index("--app-name") + 1] == "basic-auth"
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0" and cmd[cmd.index("--port") + 1] == "5000"
    assert settings.backend_uri == "postgresql+psycopg2://calolab:a-long-random-db-password@postgres:5432/mlflow"
    assert settings.auth_uri.endswith("@postgres:5432/mlflow_auth")
    assert not any("password" in part for part in cmd)  # the URL travels in MLFLOW_BACKEND_STORE_URI
    # without settings, make server talks to the local PostgreSQL
    local = ServerSettings.from_env({"CALOLAB_SERVER_ENV_FILE": os.devnull})
    assert local.backend_uri == "postgresql+psycopg2://postgres@127.0.0.1:5432/mlflow" and local.auth


def test_sweep_logs_parent_and_trial_runs_to_the_server(server_sweep):
    """Parent run and one child per trial, FINISHED, with their artifacts in the server's store only."""
    server = server_sweep.server
    with signed_in(server, "alice"):
        client = MlflowClient(tracking_uri=server.url)
        parent = client.get_run(server_sweep.parent_id)
        trials = [client.get_run(r) for r in server_sweep.trial_ids]
        models = client.search_logged_models(experiment_ids=[server_sweep.experiment_id])
    assert parent.info.status == "FINISHED" and len(trials) == 2
    for trial in trials:
        assert trial.info.status == "FINISHED"
        assert trial.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert "test/auc" in trial.data.metrics
        assert any(m.source_run_id == trial.info.run_id for m in models)  # its ONNX / PyTorch models
    # artifacts went through the server into its destination; nothing was written locally
    assert any(p.name == "config.yaml" for p in server.artifacts.rglob("config.yaml"))
    assert not (server_sweep.root / "mlruns").exists()
    assert not list(server_sweep.root.rglob("mlflow.db"))


def promote_popen(server, user: str, *args: str) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("calolab")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_") and k != "HYDRA_FULL_ERROR"}
    env.update(server.env(user))
    argv = [str(exe), "promote", "experiment=photon_id", "tracking=server", *args]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def raced(server_sweep):
    """Both trials promoted to ``MODEL`` at once, each against a champion it cannot beat by 1.0 AUC:
    without a lock both see no champion and both win; under it the second compares with the first."""
    procs = [
        promote_popen(
            server_sweep.server, "alice", f"run_id={run}", f"registered_model={MODEL}", "registry.min_improvement=1"
        )
        for run in server_sweep.trial_ids
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs)]


def test_concurrent_promotions_through_the_server_one_wins(server_sweep, raced):
    import mlflow.onnx

    codes = sorted(rc for rc, _, _ in raced)
    assert codes == [0, EXIT_REFUSED], [err[-2000:] for _, _, err in raced]
    server = server_sweep.server
    with signed_in(server, "alice"):
        client = MlflowClient(tracking_uri=server.url)
        versions = {v.run_id: v for v in client.search_model_versions(f"name = '{MODEL}'")}
        model = client.get_registered_model(MODEL)
        champion = client.get_model_version_by_alias(MODEL, "champion")
        decisions = {run: versions[run].tags for run in server_sweep.trial_ids}
        winner = next(run for run, tags in decisions.items() if tags["calolab.decision"] == "promoted")
        loser = next(run for run in server_sweep.trial_ids if run != winner)
        report = client.download_artifacts(decisions[winner]["calolab.report_run_id"], "promotion/report.md")
        onnx_model = mlflow.onnx.load_model(f"models:/{MODEL}@champion")
    assert len(versions) == 2 and champion.run_id == winner
    # both decisions recorded; the refused one was compared with the winner, not with "no champion"
    assert decisions[loser]["calolab.decision"] == "refused"
    assert decisions[loser]["calolab.compared_with"] == versions[winner].version
    assert decisions[winner]["calolab.compared_with"] == "none"
    assert "registry-tags lock" in Path(report).read_text()
    assert not any(k.startswith("calolab.lock.") for k in model.tags)  # the lock left nothing behind
    assert [i.name for i in onnx_model.graph.input]  # the champion loads from the registry


def test_read_only_user_cannot_log_or_promote_the_admin_can(server_sweep, raced):
    """``reader`` (MLflow's default READ) is refused in one line before anything is restored or moved
    (``calolab promote`` prints that line, exit 2); the server enforces it too; the admin passes."""
    import requests

    from calolab.app import compose_config
    from calolab.registry import GatePolicy, promote
    from calolab.registry.promotion import require_promotion_rights
    from calolab.tracking import TrackingStore
    from calolab.tracking.access import PermissionDeniedError

    server = server_sweep.server

    def registry_state():
        with signed_in(server, "alice"):
            client = MlflowClient(tracking_uri=server.url)
            versions = client.search_model_versions(f"name = '{MODEL}'")
            return client.get_registered_model(MODEL).aliases, sorted(v.version for v in versions)

    before = registry_state()
    store = TrackingStore.resolve(server.url, server_sweep.root / "unused")
    policy = GatePolicy.from_config(compose_config("promote", []).registry)
    with signed_in(server, "reader"), pytest.raises(PermissionDeniedError) as err:
        promote(store, "photon_id", policy, run_id=server_sweep.trial_ids[0], registered_model=MODEL)
    assert str(err.value).startswith("user 'reader' has READ permission on registered model 'photon_id_server'")
    assert "needs EDIT or MANAGE to move its aliases" in str(err.value) and "\n" not in str(err.value)
    assert registry_state() == before  # no version registered, no alias moved
    with signed_in(server, "reader"), pytest.raises(PermissionDeniedError, match="log runs to it"):
        store.experiment_id("photon_id")
    api = f"{server.url}/api/2.0/mlflow"
    exp = {"experiment_id": server_sweep.experiment_id}
    alias = {"name": MODEL, "alias": "calolab-test", "version": "1"}
    # the server itself enforces it, not only calolab's check
    assert requests.post(f"{api}/runs/create", json=exp, auth=server.auth("reader"), timeout=30).status_code == 403
    resp = requests.post(f"{api}/registered-models/alias", json=alias, auth=server.auth("reader"), timeout=30)
    assert resp.status_code == 403
    with signed_in(server, "admin"):
        require_promotion_rights(store, store.client(), MODEL, "photon_id")  # passes
        assert store.experiment_id("photon_id") == server_sweep.experiment_id
    resp = requests.post(f"{api}/registered-models/alias", json=alias, auth=server.auth("admin"), timeout=30)
    assert resp.status_code == 200
    resp = requests.delete(f"{api}/registered-models/alias", json=alias, auth=server.auth("admin"), timeout=30)
    assert resp.status_code == 200


def test_the_registry_lock_excludes_a_second_holder(mlflow_server):
    """Through the server: while one process holds a model's lock another cannot take it; then it can."""
    from tests.registry.test_promote import _contend

    with signed_in(mlflow_server, "alice"):
        _contend(mlflow_server.url, f"lock-test-{os.getpid()}")
