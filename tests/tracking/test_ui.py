"""The end-of-run hint opens the UI on the store the run went to, never printing credentials."""

from __future__ import annotations

import shlex
from pathlib import Path

from calolab.tracking import TrackingStore, ui_hint


def repo_with_makefile(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "Makefile").write_text("ui:\n\ttrue\n")
    return repo


def test_default_store_says_make_ui(tmp_path):
    repo = repo_with_makefile(tmp_path)
    store = TrackingStore(f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}", (repo / "mlruns" / "artifacts").as_uri())
    assert ui_hint(store, repo=repo, cwd=repo).startswith("open the MLflow UI with: make ui ")
    elsewhere = ui_hint(store, repo=repo, cwd=tmp_path)
    assert f"make -C {repo} ui" in elsewhere


def test_another_sqlite_store_gets_its_own_mlflow_ui_command(tmp_path):
    repo = repo_with_makefile(tmp_path)
    db = tmp_path / "my runs" / "mlflow.db"
    store = TrackingStore.resolve(f"sqlite:///{db}", tmp_path)
    text = ui_hint(store, experiment_id="3", run_id="abc", repo=repo, cwd=repo)
    assert "make ui" not in text
    command = shlex.split(text.split("with: ", 1)[1].splitlines()[0])
    assert command[0].endswith("mlflow") and command[1] == "ui"
    assert command[command.index("--backend-store-uri") + 1] == f"sqlite:///{db}"
    assert command[command.index("--default-artifact-root") + 1] == (db.parent / "artifacts").as_uri()
    assert "http://127.0.0.1:5000/#/experiments/3/runs/abc" in text


def test_a_server_is_opened_at_its_address_without_credentials(tmp_path):
    store = TrackingStore.resolve("https://alice:s3cret@mlflow.example.org:8443/", tmp_path)
    text = ui_hint(store, experiment_id="1", run_id="r1", repo=tmp_path)
    assert text.startswith("open the MLflow UI at https://mlflow.example.org:8443")
    assert "https://mlflow.example.org:8443/#/experiments/1/runs/r1" in text
    assert "s3cret" not in text and "alice" not in text


def test_a_database_store_masks_the_password(tmp_path):
    store = TrackingStore.resolve("postgresql://calolab:hunter2@db.example.org/mlflow", tmp_path)
    text = ui_hint(store, repo=tmp_path)
    assert "hunter2" not in text
    assert "postgresql://***@db.example.org/mlflow" in text and "masked password" in text
