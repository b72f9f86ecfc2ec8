"""``calolab train`` end to end in smoke mode: generated sample -> MLflow run with physics
evaluation and a verified ONNX model; failures end FAILED; evaluate/export re-run; bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from mlflow.tracking import MlflowClient

from calolab.app import compose_config
from calolab.errors import CalolabError
from calolab.pipeline.train import train
from tests.conftest import run_cli

SMOKE_EVENTS = 240


def smoke_overrides(data_dir: Path, db: Path, *extra: str) -> list[str]:
    return [
        "experiment=photon_id",
        "debug=smoke",
        f"paths.data_dir={data_dir}",
        f"tracking.uri=sqlite:///{db}",
        f"generate.n_events={SMOKE_EVENTS}",
        "generate.chunk_size=120",
        "trainer.enable_progress_bar=false",
        *extra,
    ]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One smoke training (generating its small sample on the way), shared by the tests."""
    root = tmp_path_factory.mktemp("smoke")
    data_dir, db = root / "data", root / "mlflow.db"
    cfg = compose_config("train", smoke_overrides(data_dir, db))
    result = train(cfg)
    return {"root": root, "data_dir": data_dir, "db": db, "result": result, "cfg": cfg}


def test_smoke_run_is_complete(smoke_run):
    result = smoke_run["result"]
    client = MlflowClient(tracking_uri=f"sqlite:///{smoke_run['db']}")
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "photon_id"
    # params: the flattened resolved config
    params = run.data.params
    assert params["data.batch_size"] == "32"
    assert params["model.optimizer.lr"] == "0.0001"
    assert params["trainer.max_epochs"] == "2"
    assert params["experiment_name"] == "photon_id"
    # tags
    tags = run.data.tags
    assert len(tags["git.commit"]) in (40, 7) or tags["git.commit"] == "unknown"
    assert tags["git.dirty"] in ("true", "false", "unknown")
    assert len(tags["dataset.digest"]) >= 16
    assert "calolab.version" in tags
    # per-epoch metrics, 2 epochs
    for key in ("train/loss", "val/loss", "val/auc"):
        history = client.get_metric_history(run.info.run_id, key)
        assert len(history) == 2, key
        assert all(np.isfinite(m.value) for m in history)
    # test metrics and baselines
    m = run.data.metrics
    for key in (
        "test/auc",
        "test/rej50",
        "test/rej80",
        "test/eff_at_baseline_rej",
        "test/baseline_eff",
        "export/onnx_max_abs_diff",
    ):
        assert key in m and np.isfinite(m[key]), key
    assert 0.0 <= m["test/auc"] <= 1.0
    assert m["export/onnx_max_abs_diff"] < 1e-4
    # artifacts
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "checkpoints", "onnx", "plots", "evaluation", "data"} <= names
    plots = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"roc.png", "eff_vs_pt.png", "eff_vs_eta.png", "corr_EMB2.png"} <= plots
    ckpts = [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")]
    assert ckpts and ckpts[0].endswith(".ckpt")
    config_text = Path(client.download_artifacts(run.info.run_id, "config.yaml", str(smoke_run["root"]))).read_text()
    assert "photon_id" in config_text and "_target_" in config_text


def test_logged_models_load(smoke_run, tmp_path):
    """The ONNX model runs in onnxruntime with one input per layer and a dynamic batch axis;
    the PyTorch flavor loads back."""
    import mlflow

    result = smoke_run["result"]
    mlflow.set_tracking_uri(f"sqlite:///{smoke_run['db']}")
    run = MlflowClient().get_run(result["run_id"])
    models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    by_name = {m.name: m for m in models if m.source_run_id == result["run_id"]}
    assert {"pytorch", "onnx"} <= set(by_name)
    onnx_model = mlflow.onnx.load_model(by_name["onnx"].model_uri)
    path = tmp_path / "m.onnx"
    path.write_bytes(onnx_model.SerializeToString())
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    assert names == ["EMB1", "EMB2", "EMB3", "TileBar0"]
    feeds = {i.name: np.random.default_rng(0).random((5, *i.shape[1:]), dtype=np.float32) for i in sess.get_inputs()}
    (score,) = sess.run(None, feeds)
    assert score.shape == (5,) and np.all((score >= 0) & (score <= 1))
    net = mlflow.pytorch.load_model(by_name["pytorch"].model_uri)
    assert sum(p.numel() for p in net.parameters()) > 100_000


def test_second_run_reuses_sample_and_cache(smoke_run, monkeypatch):
    """The second run neither regenerates the sample nor reads ROOT again."""
    import uproot

    import calolab.generation.runner as runner

    def boom(*a, **k):
        raise AssertionError("must not be called on a cache hit")

    monkeypatch.setattr(runner, "run_generation", boom)
    monkeypatch.setattr("calolab.pipeline.samples.run_generation", boom)
    monkeypatch.setattr(uproot, "open", boom)
    monkeypatch.setattr(uproot, "iterate", boom)
    cfg = compose_config(
        "train",
        smoke_overrides(smoke_run["data_dir"], smoke_run["db"], "trainer.max_epochs=1", "model.optimizer.lr=0.001"),
    )
    result = train(cfg)
    client = MlflowClient(tracking_uri=f"sqlite:///{smoke_run['db']}")
    run = client.get_run(result["run_id"])
    assert run.data.params["model.optimizer.lr"] == "0.001"
    assert run.data.tags["dataset.digest"] == client.get_run(smoke_run["result"]["run_id"]).data.tags["dataset.digest"]


def test_failure_inside_the_run_ends_failed_with_reason(smoke_run):
    """A failing ONNX parity check (impossible tolerance) fails the run; it is never RUNNING."""
    cfg = compose_config(
        "train",
        smoke_overrides(
            smoke_run["data_dir"], smoke_run["db"], "trainer.max_epochs=1", "export.atol=-1", "export.rtol=0"
        ),
    )
    with pytest.raises(CalolabError, match="parity"):
        train(cfg)
    client = MlflowClient(tracking_uri=f"sqlite:///{smoke_run['db']}")
    runs = client.search_runs([client.get_experiment_by_name("photon_id").experiment_id])
    assert not [r for r in runs if r.info.status == "RUNNING"]
    failed = [r for r in runs if r.info.status == "FAILED"]
    assert len(failed) == 1
    assert "parity" in failed[0].data.tags["calolab.error"]
    names = {a.path for a in client.list_artifacts(failed[0].info.run_id)}
    assert "error.txt" in names and "onnx" not in names


def test_evaluate_and_export_rerun_into_the_run(smoke_run):
    run_id = smoke_run["result"]["run_id"]
    env_args = [f"paths.data_dir={smoke_run['data_dir']}", f"tracking.uri=sqlite:///{smoke_run['db']}"]
    res = run_cli("evaluate", f"run_id={run_id}", *env_args)
    assert res.returncode == 0, res.stderr
    assert "test/auc" in res.stdout
    res = run_cli("export", f"run_id={run_id}", *env_args)
    assert res.returncode == 0, res.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{smoke_run['db']}")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(run_id, "export/onnx_max_abs_diff")) == 2
    assert len(client.get_metric_history(run_id, "test/auc")) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data.files=[/nonexistent/dir/*.root]", "generate=null"], "/nonexistent/dir/*.root"),
        (["data.inputs.EMB1.branch=cells_EMBl"], "'cells_EMBl' not found"),
        (["data.tree=photon"], "did you mean 'photons'"),
        (["data.inputs.EMB2.shape=[7,12]"], "cells_EMB2"),
        (["data.selection='ph_pt > 1e9'"], "selection"),
        (["run_id=abc"], None),  # unknown key for train: Hydra's own error
    ],
)
def test_bad_input_clear_error_no_running_run(smoke_run, args, message):
    db = smoke_run["db"]
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("photon_id").experiment_id
    before = len(client.search_runs([exp]))
    res = run_cli("train", *smoke_overrides(smoke_run["data_dir"], db)[:-1], *args)
    assert res.returncode != 0
    if message is not None:
        err = [line for line in res.stderr.splitlines() if "error" in line]
        assert len(err) == 1, res.stderr
        assert message in err[0], err[0]
    runs = client.search_runs([exp])
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert len(runs) == before, "bad input is caught before a run is created"


def test_non_root_and_truncated_files(smoke_run, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.root").write_text("this is not ROOT")
    res = run_cli(
        "train",
        *smoke_overrides(smoke_run["data_dir"], smoke_run["db"])[:-1],
        f"data.files=[{bad}/*.root]",
        "generate=null",
    )
    assert res.returncode != 0
    assert str(bad / "a.root") in res.stderr
    good = next((smoke_run["data_dir"] / "photons-smoke").glob("*.root"))
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "t.root").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    res = run_cli(
        "train",
        *smoke_overrides(smoke_run["data_dir"], smoke_run["db"])[:-1],
        f"data.files=[{cut}/*.root]",
        "generate=null",
    )
    assert res.returncode != 0
    assert str(cut / "t.root") in res.stderr
