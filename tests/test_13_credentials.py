"""Issue 13 (credentials) and 18 (client side): no credential ever leaks, no hyper-parameter is lost.

One shared set-up puts a recognisable secret (``S3CRET-<place>-<uuid>``) in every place a user
would: the password of a PostgreSQL role in ``tracking.uri`` (a real role, with its own database,
on the session's server), the password of another role in ``hydra.sweeper.storage``,
``MLFLOW_TRACKING_PASSWORD`` and ``MLFLOW_TRACKING_TOKEN`` in the environment. It then runs, as a
user would, a two-trial sweep, a training that fails (its ``error.txt``) and a promotion, and
greps for ``S3CRET`` in every file under the folders they wrote (Hydra's logs and ``.hydra``
files, the MLflow artifact store), every row of every table of the MLflow and Optuna databases,
every MLflow param/tag/metric name, every Optuna study and trial attribute, and all their output.
Hyper-parameters named like credentials (``token_dim``, ``secret_sauce_weight``) reach the params
and ``config.yaml``. An ``http://user:password@`` tracking URI is refused in one line.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
import uuid
from pathlib import Path

import optuna
import psycopg2
import pytest
import yaml
from mlflow.tracking import MlflowClient
from sqlalchemy.engine import make_url

from calolab import secrets
from calolab.logs import MaskSecrets
from calolab.tracking.params import flatten_config, to_plain
from sweeps.storage import open_storage
from tests.conftest import run_cli, smoke_args

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

MARK = "S3CRET"
#: a promotion's checks at smoke sizes (the decision is not what is tested here)
FAST_PROMOTION = (
    "registry.bootstrap_replicas=50",
    "registry.latency.runs=10",
    "registry.latency.warmup=2",
    "registry.parity.events=64",
)
RUN = uuid.uuid4().hex[:10]


def secret(place: str) -> str:
    return f"{MARK}-{place}-{uuid.uuid4().hex}"


def _admin(url: str, database: str | None = None):
    dsn = make_url(url).set(database=database) if database else make_url(url)
    conn = psycopg2.connect(dsn.render_as_string(hide_password=False).replace("postgresql+psycopg2", "postgresql"))
    conn.autocommit = True
    return conn


@pytest.fixture(scope="module")
def roles(postgres_url):
    """Two PostgreSQL roles with passwords, each owning a fresh database: MLflow's and Optuna's."""
    made = {
        place: {"role": f"calolab_t13_{place}_{RUN}", "db": f"calolab_t13_{place}_{RUN}", "password": secret(place)}
        for place in ("tracking", "optuna")
    }
    conn = _admin(postgres_url)
    with conn.cursor() as cur:
        for r in made.values():
            cur.execute(f"CREATE ROLE {r['role']} LOGIN PASSWORD %s", (r["password"],))
            cur.execute(f"CREATE DATABASE {r['db']} OWNER {r['role']}")
    base = make_url(postgres_url)
    for place, r in made.items():
        driver = "postgresql+psycopg2" if place == "tracking" else "postgresql"
        url = base.set(drivername=driver, username=r["role"], password=r["password"], database=r["db"])
        r["url"] = url.render_as_string(hide_password=False)
        r["admin_url"] = base.set(database=r["db"]).render_as_string(hide_password=False)
    try:
        yield made
    finally:
        with conn.cursor() as cur:
            for r in made.values():
                cur.execute(f"DROP DATABASE IF EXISTS {r['db']} WITH (FORCE)")
                cur.execute(f"DROP ROLE IF EXISTS {r['role']}")
        conn.close()


@pytest.fixture(scope="module")
def leaky(roles, smoke_data, tmp_path_factory):
    """The sweep, the failing training and the promotion, with secrets everywhere; their outputs."""
    root = tmp_path_factory.mktemp("credentials")
    stash_dir = tmp_path_factory.mktemp("stash")  # where calolab's private pgpass files live meanwhile
    env = {
        "MLFLOW_TRACKING_USERNAME": "alice",
        "MLFLOW_TRACKING_PASSWORD": secret("mlflow_password"),
        "MLFLOW_TRACKING_TOKEN": secret("mlflow_token"),
        secrets.SECRETS_DIR_VARIABLE: str(stash_dir),
    }
    tracking, storage = roles["tracking"]["url"], roles["optuna"]["url"]
    common = [
        *smoke_args(smoke_data),
        f"paths.log_dir={root / 'logs'}",
        f"tracking.uri={tracking}",
        "trainer.max_epochs=1",
        "+notes.token_dim=7",
        "+notes.secret_sauce_weight=0.25",
    ]
    outputs = {}

    def run(name, *args):
        start, cpu = time.monotonic(), _children_cpu()
        res = run_cli(*args, cwd=root, env=env, timeout=600)  # cwd: MLflow's ./mlruns artifact root
        print(f"calolab {name}: {time.monotonic() - start:.1f} s, {_children_cpu() - cpu:.1f} s CPU")
        outputs[name] = res
        return res

    sweep = run(
        "sweep",
        "train",
        "-m",
        *common,
        "sweep=photon_id",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=leaky",
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    # a training that fails inside its run (a typo in a Lightning flag): error.txt, FAILED
    failing = run("failing", "train", *common, "+trainer.max_epoch=1")
    assert failing.returncode != 0 and "max_epoch" in failing.stderr
    promote = run(
        "promote",
        "promote",
        "experiment=photon_id",
        "sweep=leaky",
        f"tracking.uri={tracking}",
        f"paths.log_dir={root / 'logs'}",
        *FAST_PROMOTION,
    )
    assert promote.returncode in (0, 3), promote.stderr[-3000:]  # promoted or refused by a gate: decided
    return {"root": root, "stash_dir": stash_dir, "outputs": outputs, "roles": roles}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _hits(text: str) -> list[str]:
    """The lines of ``text`` holding the mark."""
    return [line.strip()[:300] for line in text.splitlines() if MARK in line]


def _without_password(r: dict) -> str:
    """The role's URL as calolab hands it on: the user kept, the password gone."""
    return r["url"].replace(f":{r['password']}@", "@")


def _tracking_client(roles) -> MlflowClient:
    return MlflowClient(tracking_uri=_without_password(roles["tracking"]))  # the server trusts local users


def test_no_secret_in_any_file_or_output(leaky):
    files = [p for p in leaky["root"].rglob("*") if p.is_file()]
    assert any(p.name == "error.txt" for p in files), "the failing run logged no error.txt"
    assert any(p.suffix == ".log" for p in files) and any(p.name == "overrides.yaml" for p in files)
    leaks = {str(p): b for p in files if MARK.encode() in (b := p.read_bytes())}
    assert not leaks, f"secret in {sorted(leaks)}"
    for name, res in leaky["outputs"].items():
        assert not _hits(res.stdout + res.stderr), f"{name}: {_hits(res.stdout + res.stderr)}"
    sweep = leaky["outputs"]["sweep"]
    assert "+sweep_trial.storage=" in sweep.stdout + sweep.stderr  # the launch lines were checked too
    # the private pgpass files are gone with the commands that wrote them
    assert list(leaky["stash_dir"].iterdir()) == []


@pytest.mark.parametrize("place", ["tracking", "optuna"])
def test_no_secret_in_any_database_row(leaky, place):
    conn = _admin(leaky["roles"][place]["admin_url"])
    found, rows = [], 0
    with conn.cursor() as cur:
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        tables = [t for (t,) in cur.fetchall()]
        for table in tables:
            cur.execute(f'SELECT t::text FROM "{table}" t')
            for (text,) in cur.fetchall():
                rows += 1
                if MARK in text:
                    found.append(f"{table}: {text[:200]}")
    conn.close()
    assert rows > 20 and ("runs" in tables if place == "tracking" else "trials" in tables)
    assert not found, found


def test_no_secret_in_mlflow_runs_or_optuna_attributes(leaky):
    client = _tracking_client(leaky["roles"])
    exp = client.get_experiment_by_name("photon_id")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    assert {r.info.status for r in runs} >= {"FINISHED", "FAILED"}
    for r in runs:
        text = repr((r.data.params, r.data.tags, sorted(r.data.metrics)))
        assert MARK not in text, r.info.run_id
    study = optuna.load_study(study_name="leaky", storage=open_storage(_without_password(leaky["roles"]["optuna"])))
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.COMPLETE] * 2
    study_system_attrs = study._storage.get_study_system_attrs(study._study_id)  # no public reader in Optuna 5
    attrs = [study.user_attrs, study_system_attrs] + [(t.user_attrs, t.system_attrs) for t in study.get_trials()]
    assert "calolab.metrics" in study.user_attrs and all("calolab.worker" in t.user_attrs for t in study.get_trials())
    assert MARK not in repr(attrs)


def test_hyper_parameters_named_like_credentials_survive(leaky, tmp_path):
    client = _tracking_client(leaky["roles"])
    exp = client.get_experiment_by_name("photon_id")
    trainings = [r for r in client.search_runs([exp.experiment_id]) if "notes.token_dim" in r.data.params]
    assert len(trainings) == 3  # two trials and the failed run
    for run in trainings:
        assert run.data.params["notes.token_dim"] == "7" and run.data.params["notes.secret_sauce_weight"] == "0.25"
        # the tracking URI keeps its user name and loses its password
        assert run.data.params["tracking.uri"] == _without_password(leaky["roles"]["tracking"])
        config = yaml.safe_load(
            Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))).read_text()
        )
        assert config["notes"] == {"token_dim": 7, "secret_sauce_weight": 0.25}
    failed = next(r for r in trainings if r.info.status == "FAILED")
    assert "max_epoch" in failed.data.tags["calolab.error"]


def test_a_user_and_password_in_an_http_tracking_uri_are_refused():
    password = secret("http")
    res = run_cli("train", "experiment=photon_id", f"tracking.uri=http://alice:{password}@127.0.0.1:9", timeout=120)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "MLFLOW_TRACKING_USERNAME" in lines[0] and "http://***@127.0.0.1:9" in lines[0]
    assert MARK not in res.stdout + res.stderr


def test_values_are_masked_and_keys_kept(monkeypatch):
    password = secret("env")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    cfg = {
        "net": {"token_dim": 64, "tokenizer_dim": 8, "secret_sauce_weight": 0.5, "n_tokens": 3},
        "db": {"password": "hunter2", "token": "abc", "api_key": None, "url": "postgresql://u:pw@h/db"},
        "note": f"logged in with {password}",
        "same": password,
    }
    flat = flatten_config(cfg)
    assert flat["net.token_dim"] == "64" and flat["net.tokenizer_dim"] == "8"
    assert flat["net.secret_sauce_weight"] == "0.5" and flat["net.n_tokens"] == "3"
    assert flat["db.password"] == flat["db.token"] == "***" and flat["db.api_key"] == "None"
    assert flat["db.url"] == "postgresql://***@h/db" and flat["note"] == "logged in with ***" and flat["same"] == "***"
    assert to_plain(cfg)["net"] == cfg["net"]


def test_a_stashed_password_reaches_libpq(postgres_url, roles, tmp_path, monkeypatch):
    """The password taken out of the URL is the one libpq connects with (read from PGPASSFILE,
    before the server's authentication; PQpass reports it whatever the server's auth method)."""
    monkeypatch.setenv(secrets.SECRETS_DIR_VARIABLE, str(tmp_path))
    monkeypatch.delenv("PGPASSFILE", raising=False)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setattr(secrets, "_stashed", [])
    monkeypatch.setattr(secrets, "_passfile", None)
    r = roles["optuna"]
    stripped = secrets.stash(r["url"], option="hydra.sweeper.storage")
    assert r["password"] not in stripped and make_url(stripped).username == r["role"]
    passfile = Path(os.environ["PGPASSFILE"])
    assert passfile.parent == tmp_path and passfile.stat().st_mode & 0o777 == 0o600
    conn = psycopg2.connect(stripped)
    try:
        assert conn.info.password == r["password"]
    finally:
        conn.close()
    assert secrets.mask(f"failed: {r['password']}") == "failed: ***"
    monkeypatch.setenv("PGPASSWORD", "another-one")
    with pytest.raises(secrets.ConfigError, match="PGPASSWORD is set"):
        secrets.stash(roles["tracking"]["url"], option="tracking.uri")


def test_hydra_files_and_log_lines_are_masked(tmp_path, monkeypatch):
    """What reaches Hydra from a config file: its saved YAML and its log records are masked."""
    token = secret("token")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
    saved = tmp_path / "config.yaml"
    saved.write_text(
        "tracking:\n  uri: postgresql://calolab:hunter2@db/mlflow\ndb:\n  password: hunter2\n"
        f"  token: null\nnet:\n  token_dim: 64\nnote: {token}\n"
    )
    secrets.mask_files([saved, tmp_path / "missing.yaml"])
    assert saved.read_text() == (
        "tracking:\n  uri: postgresql://***@db/mlflow\ndb:\n  password: ***\n"
        "  token: null\nnet:\n  token_dim: 64\nnote: ***\n"
    )
    try:
        raise RuntimeError(f"cannot reach http://alice:{token}@host")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "token %s", (token,), sys.exc_info())
    assert MaskSecrets().filter(record)
    text = logging.Formatter().format(record)
    assert MARK not in text and "token ***" in text and "http://***@host" in text
