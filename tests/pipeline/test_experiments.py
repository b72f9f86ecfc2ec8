"""Every jet-tagger preset end to end in smoke mode, as a user runs it: generated sample -> MLflow run
in the experiment of the preset's name, with the net's and every baseline's metrics, the plots of
its evaluation config and a parity-checked ONNX model -> ``calolab promote experiment=<name>``.

The photon preset's own end-to-end tests are tests/pipeline/test_train.py and tests/registry/.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from mlflow.tracking import MlflowClient

from calolab.app import compose_config
from calolab.pipeline.train import train
from calolab.tracking.params import flatten_config
from tests.conftest import run_cli

#: jets per smoke sample: enough for both classes in every split and a mass-window fit
JETS = 300

#: preset -> (baseline metric prefixes, the reference working point or None, the ONNX input shape)
PRESETS = {
    "wtag_cnn": (("tau21", "mass_tau21", "bdt"), "mass_tau21", [1, 25, 25]),
    "wtag_maxout": (("tau21", "mass_tau21", "bdt"), "mass_tau21", [1, 25, 25]),
    "qg_cnn": (("multiplicity", "width", "bdt"), None, [3, 33, 33]),
}


@pytest.fixture(scope="module")
def jet_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("jets")
    return {"data": root / "data", "db": root / "mlflow.db"}


def overrides(preset: str, store) -> list[str]:
    return [
        f"experiment={preset}",
        "debug=smoke",
        f"paths.data_dir={store['data']}",
        f"tracking.uri=sqlite:///{store['db']}",
        f"generate.n_events={JETS}",
        f"generate.chunk_size={JETS // 2}",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(PRESETS))
def test_preset_trains_evaluates_exports_and_promotes(preset, jet_store, tmp_path):
    baselines, working_point, shape = PRESETS[preset]
    cfg = compose_config("train", overrides(preset, jet_store))
    result = train(cfg)
    client = MlflowClient(tracking_uri=f"sqlite:///{jet_store['db']}")
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    # one set of params: the flattened config, nothing logged a second time under another name
    assert set(run.data.params) == set(flatten_config(cfg))
    assert run.data.params["model.optimizer.lr"] == str(cfg.model.optimizer.lr)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == preset
    # the UI opens it as a training experiment, with the preset's description
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment.tags["mlflow.note.content"] == cfg.experiment_description
    # the dataset is an MLflow dataset input (the runs table's Dataset column)
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == run.data.tags["dataset.digest"][:32]
    assert run.data.tags["calolab.task"] == "classifier"
    m = run.data.metrics
    for key in ("test/auc", "test/rej50", "test/rej80", "val/auc", "val/auc_unweighted"):
        assert np.isfinite(m[key]), key
    for name in baselines:
        for key in (f"test/{name}_auc", f"test/{name}_rej50", f"test/{name}_rej80"):
            assert (0.0 <= m[key] <= 1.0) if key.endswith("auc") else m[key] >= 1.0, key
    if working_point:
        assert 0 < m[f"test/{working_point}_eff"] < 1 and m[f"test/{working_point}_rej"] >= 1
        assert f"test/eff_at_{working_point}_rej" in m
    assert not any("baseline" in k for k in m)  # the photon names stay photon's
    # the W taggers log the decorrelation trade-off every epoch, as the adversarial ones do (issue 14)
    epochs = len(client.get_metric_history(run.info.run_id, "val/auc"))
    history = client.get_metric_history(run.info.run_id, "val/inv_jsd50")
    if preset.startswith("wtag"):
        assert len(history) == epochs >= 1 and all(h.value > 0 for h in history)
        assert len(client.get_metric_history(run.info.run_id, "val/rej50")) == epochs
    else:
        assert history == [] and "val/rej50" not in m
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/roc.png", "plots/score.png", "plots/eff_vs_pt.png"} <= plots
    # average images and correlation maps: one per channel of a multi-channel image
    channels = [""] if shape[0] == 1 else [f"_{c}" for c in range(shape[0])]
    assert {f"plots/{kind}_image{c}.png" for kind in ("average", "corr") for c in channels} <= plots
    path = client.download_artifacts(run.info.run_id, "evaluation/tables.json", str(tmp_path))
    tables = json.loads(Path(path).read_text())
    assert set(tables["baselines"]) == set(baselines)
    assert "constant" in tables["skipped"]["eff_vs_mu"]  # one pileup condition (mu = 0) in the sample

    # the ONNX model: the data's image shape, probabilities, parity checked before logging
    assert m["export/onnx_max_abs_diff"] < 1e-4
    onnx_path = client.download_artifacts(run.info.run_id, "onnx/model.onnx", str(tmp_path))
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert inp.name == "image" and list(inp.shape[1:]) == shape
    (score,) = sess.run(None, {"image": np.random.default_rng(0).random((4, *shape), dtype=np.float32)})
    assert score.shape == (4,) and np.all((score >= 0) & (score <= 1))

    # promotable as a user does it: the first model of the experiment becomes champion
    res = run_cli(
        "promote",
        f"experiment={preset}",
        f"tracking.uri=sqlite:///{jet_store['db']}",
        f"paths.data_dir={jet_store['data']}",
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    assert "PROMOTED" in res.stdout
    champion = client.get_model_version_by_alias(preset, "champion")
    assert champion.run_id == result["run_id"] or champion.tags["calolab.source_run_id"] == result["run_id"]
