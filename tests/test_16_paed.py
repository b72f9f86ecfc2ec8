"""Issue 16, pileup denoising (PAED): the paired pileup photon sample (real minimum-bias deposits,
the pileup-free twin of every event), the ``paed`` preset end to end (training, reconstruction
metrics, image plots, ONNX parity on test events), the PAED frozen in front of the photon CNN as one
ONNX graph (``photon_id_paed``'s net), and a sample without twin refused in one clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import uproot
from mlflow.tracking import MlflowClient
from omegaconf import open_dict

from calolab.app import compose_config
from calolab.errors import ConfigError, InputFileError
from calolab.generation.runner import run_generation
from calolab.pipeline.train import build_data, train

LAYERS = ("EMB1", "EMB2", "EMB3", "TileBar0")
EVENTS = 100
MU = 100.0


def generate(out: Path, overrides: list[str]) -> Path:
    cfg = compose_config(
        "generate",
        ["sample=photons", f"n_events={EVENTS}", f"chunk_size={EVENTS}", "seed=7", "progress=false", *overrides],
    )
    with open_dict(cfg):
        cfg.out = str(out)
    run_generation(cfg, "photons")
    return out


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """The paired pileup sample (mu uniform in [0, 100]) and the default mu = 0 sample of the same seed."""
    root = tmp_path_factory.mktemp("paed")
    paired = generate(
        root / "paired",
        [
            f"pileup.mu={MU}",
            "pileup.pool_size=30",
            "sample.pileup_overlay=true",
            "sample.pileup_paired=true",
            "sample.pileup_mu_spread=true",
        ],
    )
    plain = generate(root / "plain", [])
    return {"root": root, "paired": paired, "plain": plain}


def read(folder: Path) -> dict[str, np.ndarray]:
    return uproot.concatenate(f"{folder}/*.root:photons", library="np")


def test_paired_sample_same_hard_events_with_and_without_pileup(samples):
    paired, plain = read(samples["paired"]), read(samples["plain"])
    # the same hard events, cell for cell, as the default sample of the same seed at mu = 0
    np.testing.assert_array_equal(paired["event_number"], plain["event_number"])
    np.testing.assert_array_equal(paired["truth_pt"], plain["truth_pt"])
    np.testing.assert_array_equal(paired["ph_pt_nopu"], plain["ph_pt"])
    mu, n_pu = paired["mu"], paired["n_pileup"]
    assert 0.0 <= mu.min() and mu.max() <= MU and mu.std() > 10.0  # spread over [0, mu]
    assert np.corrcoef(mu, n_pu)[0, 1] > 0.9  # Poisson(mu) interactions
    added_total = np.zeros(len(mu))
    for layer in LAYERS:
        clean, noisy = paired[f"cells_{layer}_nopu"], paired[f"cells_{layer}"]
        np.testing.assert_array_equal(clean, plain[f"cells_{layer}"])
        added = noisy.astype(np.float64) - clean
        # pileup only adds energy; where no pileup deposit falls the cells are the hard event's, exactly
        assert added.min() >= 0.0
        untouched = added == 0.0
        np.testing.assert_array_equal(noisy[untouched], clean[untouched])
        assert untouched.any() and (~untouched).any()
        # no interaction, no deposit: the whole window is the hard event's
        np.testing.assert_array_equal(noisy[n_pu == 0], clean[n_pu == 0]) if (n_pu == 0).any() else None
        added_total += added.reshape(len(mu), -1).sum(axis=1)
    # real pileup energy, growing with the number of interactions (~1 GeV per layer at mu ~ 50)
    assert np.corrcoef(n_pu, added_total)[0, 1] > 0.5
    assert np.median(added_total[mu > 50]) > 1000.0
    assert np.all(paired["ph_pt"] >= paired["ph_pt_nopu"] - 1e-3 * paired["ph_pt_nopu"])


@pytest.fixture(scope="module")
def paed_run(samples):
    root = samples["root"]
    cfg = compose_config(
        "train",
        [
            "experiment=paed",
            "debug=smoke",
            "~generate",
            f"data.files=[{samples['paired']}/*.root]",
            f"paths.data_dir={root / 'data'}",
            f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
            "trainer.max_epochs=1",
            "evaluation.n_examples=2",
        ],
    )
    return cfg, train(cfg)


def test_paed_trains_evaluates_and_exports_with_parity(paed_run, tmp_path):
    cfg, result = paed_run
    client = MlflowClient(cfg.tracking.uri)
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "paed"
    assert run.data.tags["calolab.task"] == "denoiser"
    m = run.data.metrics
    for key in ("train/loss", "val/loss", "test/mse_ratio", *(f"val/mse_{k}" for k in LAYERS)):
        assert np.isfinite(m[key]), key
    for k in LAYERS:
        assert m[f"test/mse_{k}"] >= 0 and m[f"test/mse_raw_{k}"] > 0, k  # the raw images do hold pileup
    assert 0.5 < m["test/response_raw_EMB2"] < 2.0
    assert any(key.startswith("test/mse_ratio_mu") for key in m)
    plots = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {f"images_{k}.png" for k in LAYERS} | {"response.png"} <= plots
    # the exported auto-encoder on the real test events = the PyTorch outputs the evaluation logged
    onnx_path = client.download_artifacts(run.info.run_id, "onnx/model.onnx", str(tmp_path))
    outputs = np.load(client.download_artifacts(run.info.run_id, "evaluation/test_outputs.npz", str(tmp_path)))
    dm = build_data(cfg)
    test = dm.arrays("test").inputs
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(LAYERS)  # the noisy images only, not the targets
    got = session.run(None, {k: np.ascontiguousarray(test[k]) for k in LAYERS})
    assert [o.name for o in session.get_outputs()] == [f"denoised_{k}" for k in LAYERS]
    for k, image in zip(LAYERS, got, strict=True):
        assert image.shape == test[k].shape
        np.testing.assert_allclose(image, outputs[k], atol=0.1, rtol=1e-4)
    assert m["export/onnx_max_abs_diff"] <= cfg.export.atol


def test_denoiser_frozen_in_front_of_the_photon_cnn_one_graph(paed_run, samples, tmp_path):
    from calolab.export.onnx import check_parity, export_onnx
    from lightning_modules.classifier import SignalProbability
    from lightning_modules.nets import DenoisedLayerCNN

    cfg, result = paed_run
    shapes = {k: (1, *v.shape) for k, v in cfg.data.inputs.items()}
    cnn = {"channels": [4], "dense": [8], "dropout": 0.0}
    net = DenoisedLayerCNN(
        shapes, cnn, denoiser_run=result["run_id"], tracking_uri=cfg.tracking.uri, mlruns_dir=str(tmp_path)
    )
    assert not any(p.requires_grad for p in net.denoiser.parameters())
    assert any(p.requires_grad for p in net.cnn.parameters())
    net.train()
    assert not net.denoiser.training  # frozen: stays in eval mode
    raw = DenoisedLayerCNN(shapes, cnn, denoiser_run=None)
    raw.cnn.load_state_dict(net.cnn.state_dict())
    dm = build_data(cfg)
    test = dm.arrays("test").inputs
    x = [torch.as_tensor(np.ascontiguousarray(test[k][:32])) for k in LAYERS]
    net.eval()
    raw.eval()
    with torch.no_grad():
        assert not torch.allclose(net(*x), raw(*x))  # the denoiser changes what the CNN sees
        assert torch.allclose(net(*x), raw(*net.denoiser(*x)))
    module = SignalProbability(net).eval()
    path = export_onnx(module, list(LAYERS), shapes, tmp_path / "model.onnx")
    names = {i.name for i in onnx.load(str(path)).graph.initializer}
    assert any("denoiser" in n for n in names) and any("cnn" in n for n in names)  # one graph holds both
    assert check_parity(path, module, [t.numpy() for t in x], atol=1e-5, rtol=1e-4) <= 1e-5


def test_denoiser_from_a_registered_model_alias(paed_run, tmp_path):
    """net.denoiser_run=<model>@<alias> loads the auto-encoder of the run behind that version."""
    from lightning_modules.nets.autoencoder import load_denoiser

    cfg, result = paed_run
    client = MlflowClient(cfg.tracking.uri)
    name = f"paed-alias-{tmp_path.name}"
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{result['run_id']}/onnx", run_id=result["run_id"])
    client.set_registered_model_alias(name, "champion", version.version)
    by_run = load_denoiser(result["run_id"], cfg.tracking.uri, str(tmp_path))
    by_alias = load_denoiser(f"{name}@champion", cfg.tracking.uri, str(tmp_path))
    for (k, a), (k2, b) in zip(by_run.state_dict().items(), by_alias.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k
    with pytest.raises(
        ConfigError,
        match=rf"net.denoiser_run='{name}@best': registered model '{name}' has no alias 'best' \(its aliases: champion \(v1\)\)",
    ):
        load_denoiser(f"{name}@best", cfg.tracking.uri, str(tmp_path))
    with pytest.raises(ConfigError, match=r"no registered model 'paed-nope'"):
        load_denoiser("paed-nope@champion", cfg.tracking.uri, str(tmp_path))


def test_sample_without_pileup_free_twin_is_refused(samples):
    root = samples["root"]
    uri = f"sqlite:///{root / 'mlflow-twin.db'}"
    cfg = compose_config(
        "train",
        [
            "experiment=paed",
            "debug=smoke",
            "~generate",
            f"data.files=[{samples['plain']}/*.root]",
            f"paths.data_dir={root / 'data-twin'}",
            f"tracking.uri={uri}",
        ],
    )
    with pytest.raises(InputFileError) as err:
        train(cfg)
    text = str(err.value)
    assert str(samples["plain"]) in text and "'cells_EMB1_nopu'" in text
    assert "this sample has no pileup-free twin: generate it with" in text and "pileup_paired=true" in text
    client = MlflowClient(uri)
    running = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert not [r for r in running if r.info.status == "RUNNING"]
