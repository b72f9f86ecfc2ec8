"""Issue 15: LAGAN, the task with no score and two nets, through the whole spine.

- the locally-connected layer against a naive loop over output positions (values and gradients);
- the fidelity metrics on known distributions (closed-form W1 and Frechet distances);
- the generator exported to ONNX, parity-checked on fixed latents;
- ``experiment=lagan`` trained in smoke mode on a ROOT jet file the test writes: per-epoch,
  per-class fidelity and floor in MLflow, the generator evaluation's metrics and plots, the
  generator's ONNX model (latent + class in, image out); promoted with ``registry=generator``;
  ``calolab sample`` from the champion and from the run writes jets that a jet datamodule turns back
  into the generated images; its bad inputs are one clear error each, with nothing written.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from mlflow.tracking import MlflowClient

from calolab.app import compose_config
from calolab.errors import CalolabError, ConfigError
from calolab.evaluation.fidelity import floor, frechet_distance, wasserstein_1
from calolab.export.onnx import check_parity, read_metadata
from calolab.pipeline.train import train
from calolab.registry import GatePolicy, promote
from calolab.tracking import TrackingStore
from lightning_modules.lagan import LAGAN
from lightning_modules.nets.lagan import LaganNets
from lightning_modules.nets.locally_connected import LocallyConnected2d
from tests.conftest import run_cli
from tests.datamodules.jet_samples import make_jet_dm, write_jets

#: a LAGAN of a few thousand weights: the smoke training takes seconds
TINY_NET = {
    "generator": {
        "latent_dim": 8,
        "dense_channels": 4,
        "conv_channels": 4,
        "lc_channels": [2, 2],
        "lc_kernels": [5, 3],
    },
    "discriminator": {"conv_channels": 4, "lc_channels": [2, 2, 2], "minibatch_kernels": 4, "minibatch_dim": 3},
}
TINY_OVERRIDES = [
    "net=lagan_small",
    *(f"net.{part}.{k}={v}".replace(" ", "") for part, args in TINY_NET.items() for k, v in args.items()),
]


# -- the locally-connected layer -----------------------------------------------------------------
def naive_locally_connected(layer: LocallyConnected2d, x: torch.Tensor) -> torch.Tensor:
    """The definition, one output position at a time."""
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
    x = torch.nn.functional.pad(x, (pw, pw, ph, ph))
    ho, wo = layer.output_size
    out = torch.zeros(x.shape[0], layer.out_channels, ho, wo, dtype=x.dtype)
    for i in range(ho):
        for j in range(wo):
            field = x[:, :, i * sh : i * sh + kh, j * sw : j * sw + kw].reshape(x.shape[0], -1)  # (B, C*kh*kw)
            out[:, :, i, j] = field @ layer.weight[i * wo + j].T
    return out + layer.bias if layer.bias is not None else out


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding", "bias"),
    [((7, 6), 3, 1, 0, True), ((8, 8), (3, 2), 2, 1, False), ((5, 5), 5, 1, 2, True)],
)
def test_locally_connected_matches_a_naive_loop_in_values_and_gradients(size, kernel, stride, padding, bias):
    torch.manual_seed(0)
    layer = LocallyConnected2d(3, 4, size, kernel, stride=stride, padding=padding, bias=bias).double()
    x = torch.randn(5, 3, *size, dtype=torch.float64, requires_grad=True)
    fast = layer(x)
    slow = naive_locally_connected(layer, x)
    assert fast.shape == slow.shape == (5, 4, *layer.output_size)
    torch.testing.assert_close(fast, slow)
    grad_out = torch.randn_like(fast)
    grads_fast = torch.autograd.grad(fast, [x, *layer.parameters()], grad_out)
    grads_slow = torch.autograd.grad(slow, [x, *layer.parameters()], grad_out)
    for a, b in zip(grads_fast, grads_slow, strict=True):
        torch.testing.assert_close(a, b)
    # unshared: moving a pattern to another position changes the response (a convolution's would shift)
    with pytest.raises(ConfigError, match="does not fit"):
        LocallyConnected2d(3, 4, (2, 2), 3)


# -- fidelity metrics ----------------------------------------------------------------------------
def test_fidelity_metrics_on_known_distributions():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.0, 1.0, 200_000), rng.normal(0.7, 1.0, 200_000)
    # equal widths: the optimal transport is the shift, W1 = |mu1 - mu2|
    assert wasserstein_1(a, b) == pytest.approx(0.7, abs=0.01)
    assert wasserstein_1(a, a) == 0.0
    # Gaussians N(mu1, S1), N(mu2, S2): |dmu|^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2); diagonal S: sum (s1 - s2)^2
    x = rng.normal([0.0, 1.0], [1.0, 2.0], (200_000, 2))
    y = rng.normal([0.5, 1.0], [1.0, 3.0], (200_000, 2))
    assert frechet_distance(x, y) == pytest.approx(0.5**2 + (2.0 - 3.0) ** 2, rel=0.03)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    # the floor: two halves of one sample of images are close, and closer than a shifted sample
    images = rng.exponential(1.0, (400, 1, 9, 9)).astype(np.float32)
    eta = phi = np.linspace(-0.4, 0.4, 9)
    same = floor(images, eta, phi)
    assert set(same) == {"w1_pixel", "w1_mass", "w1_pt", "w1_tau21", "fpd"}
    from calolab.evaluation.fidelity import fidelity

    shifted = fidelity(images * 1.5, images, eta, phi)
    assert shifted["w1_pixel"] > 5 * same["w1_pixel"] and shifted["fpd"] > 5 * same["fpd"]
    with pytest.raises(CalolabError, match="non-empty"):
        wasserstein_1(np.array([]), a)


# -- the generator in ONNX (the smoke run's) -----------------------------------------------------------------------
def tiny_lagan(**kwargs) -> LAGAN:
    torch.manual_seed(0)
    nets = LaganNets({"image": (1, 25, 25)}, **TINY_NET)
    return LAGAN(nets, optimizer=torch.optim.Adam, pixel_scale=1e4, **kwargs)


@pytest.mark.slow
def test_generator_onnx_parity_on_fixed_latents_and_predict_errors(lagan_run, tmp_path):
    """The run's exported generator against its restored task, on the task's fixed latents."""
    from calolab.pipeline.restore import restore_run

    store = TrackingStore.resolve(lagan_run["db"], str(lagan_run["root"]))
    run_id = lagan_run["result"]["run_id"]
    task = restore_run(run_id, store).model.eval()
    path = MlflowClient(tracking_uri=lagan_run["db"]).download_artifacts(run_id, "onnx/model.onnx", str(tmp_path))
    shapes = task.inference_inputs()
    assert shapes == {"latent": (8,), "label": ()}
    examples = task.example_inputs(40)
    np.testing.assert_array_equal(examples["latent"], task.example_inputs(40)["latent"])  # fixed latents
    arrays = [examples["latent"], examples["label"]]
    assert check_parity(path, lambda xs: task.predict(dict(zip(shapes, xs))), arrays, atol=1.0, rtol=1e-3) < 1.0
    images = task.predict(examples)["image"]
    assert images.shape == (40, 1, 25, 25) and images.min() >= 0.0  # ReLU output
    assert not np.allclose(images[examples["label"] == 0].mean(0), images[examples["label"] == 1].mean(0))
    meta = read_metadata(path)
    assert meta["latent_dim"] == "8" and meta["task"] == "generator" and meta["class_names"] == '["qcd", "w"]'
    # the parity check fails when the ONNX file is not the module's
    other = tiny_lagan(seed=3)
    with pytest.raises(CalolabError, match="parity"):
        check_parity(path, lambda xs: other.predict(dict(zip(shapes, xs))), arrays, atol=1.0, rtol=1e-3)
    # predict's bad inputs
    with pytest.raises(CalolabError, match=r"shape \(N, 8\)"):
        task.predict({"latent": np.zeros((3, 5), np.float32), "label": np.zeros(3)})
    with pytest.raises(CalolabError, match="trained classes"):
        task.predict({"latent": np.zeros((3, 8), np.float32), "label": np.array([0, 1, 2])})


# -- experiment=lagan end to end -----------------------------------------------------------------
@pytest.fixture(scope="module")
def lagan_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lagan")
    write_jets(root / "data", n_files=2, per_file=200, seed=15)
    common = [f"tracking.uri=sqlite:///{root / 'mlflow.db'}", f"paths.data_dir={root}"]
    overrides = [
        "experiment=lagan",
        "debug=smoke",
        "generate=null",
        f"data.files=[{root}/data/*.root]",
        "data.selection=null",  # the synthetic jets are not in the W mass window
        f"data.cache_dir={root}/cache",
        "evaluation.grid=[2,3]",
        *TINY_OVERRIDES,
        *common,
    ]
    result = train(compose_config("train", overrides))
    return {"root": root, "result": result, "common": common, "db": f"sqlite:///{root / 'mlflow.db'}"}


@pytest.mark.slow
def test_lagan_trains_tracks_fidelity_exports_and_promotes(lagan_run, tmp_path):
    client = MlflowClient(tracking_uri=lagan_run["db"])
    run = client.get_run(lagan_run["result"]["run_id"])
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "lagan"
    assert run.data.tags["calolab.task"] == "generator"
    m = run.data.metrics
    # every epoch, per class: the distances and their floor; the figure of merit val/fpd
    for key in ("val/fpd", "val/fpd_floor", "train/d_loss", "train/g_loss"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 2, key
    for cls in ("qcd", "w"):
        for d in ("w1_pixel", "w1_mass", "w1_pt", "w1_tau21", "fpd"):
            assert m[f"val/{d}_{cls}"] >= 0 and m[f"val/floor_{d}_{cls}"] >= 0
            assert m[f"test/{d}_{cls}"] >= 0 and m[f"test/floor_{d}_{cls}"] >= 0
    # a few steps of training are far from the simulated jets: far above the sample-to-sample floor
    assert m["test/fpd"] > m["test/fpd_floor"]
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/average_qcd.png", "plots/average_w.png", "plots/distributions.png"} <= plots
    assert "plots/generated_grid.png" in plots
    outputs = np.load(client.download_artifacts(run.info.run_id, "evaluation/test_outputs.npz", str(tmp_path)))
    assert outputs["image"].shape[1:] == (1, 25, 25) and len(outputs["label"]) == len(outputs["image"])
    # the generator in ONNX: latent + class in, a 25x25 image in MeV out, parity-checked before logging
    assert m["export/onnx_max_abs_diff"] < 1.0
    onnx_path = client.download_artifacts(run.info.run_id, "onnx/model.onnx", str(tmp_path))
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["latent", "label"]
    (image,) = sess.run(None, {"latent": np.zeros((3, 8), np.float32), "label": np.array([0, 1, 1], np.float32)})
    assert image.shape == (3, 1, 25, 25) and image.min() >= 0

    # promoted with the generator policy: Frechet distance, image parity, no ROC
    decision, candidate, _ = promote(
        TrackingStore.resolve(lagan_run["db"], str(lagan_run["root"])),
        "lagan",
        GatePolicy.from_config(compose_config("promote", ["registry=generator"]).registry),
    )
    gates = {g.name: g for g in decision.gates}
    assert decision.promoted and candidate.score is None
    assert gates["metric"].detail.startswith("test/fpd") and "first promotion" in gates["metric"].detail
    assert gates["parity"].status == "pass" and "on 256 events" in gates["parity"].detail
    assert decision.candidate_metrics["test/fpd"] == pytest.approx(m["test/fpd"], rel=1e-6)  # same latents, same jets
    champion = client.get_model_version_by_alias("lagan", "champion")
    assert champion.run_id == run.info.run_id
    report = {a.path for a in client.list_artifacts(decision.report_run_id, "promotion")}
    assert report == {"promotion/report.md", "promotion/decision.json"}

    # sampled from the champion into a ROOT file a jet datamodule turns back into the same images
    out = tmp_path / "gen" / "lagan.root"
    res = run_cli("sample", "model=lagan@champion", "n=60", f"out={out}", "seed=4", *lagan_run["common"])
    assert res.returncode == 0, res.stderr
    assert "sampled 60 jet images" in res.stdout and out.exists()
    dm = make_jet_dm(
        tmp_path,
        files=str(out),
        shape=[25, 25],
        half_width=[1.25, 1.25],
        channels=["pt"],
        centre=None,
        aux=["jet_m", "jet_tau21"],
        split={"val": 0.0, "test": 0.0},
    )
    dm.prepare_data()
    dm.setup("fit")
    rebuilt = dm.arrays("train")
    rng = np.random.default_rng(4)
    latent = rng.standard_normal((60, 8)).astype(np.float32)
    label = (np.arange(60) % 2).astype(np.float32)
    (expected,) = sess.run(None, {"latent": latent, "label": label})
    order = np.argsort(rebuilt.aux["event_number"])
    np.testing.assert_allclose(rebuilt.inputs["image"][order], expected, rtol=1e-5, atol=1e-2)
    np.testing.assert_array_equal(rebuilt.label[order], label)


@pytest.mark.slow
def test_sample_bad_input_is_one_clear_error_and_writes_nothing(lagan_run, tmp_path):
    from calolab.commands.sample import sample

    np.save(tmp_path / "latents.npy", np.zeros((2, 5), np.float32))
    out = tmp_path / "bad.root"
    run = f"run_id={lagan_run['result']['run_id']}"
    cases = [
        ([run, "n=-3"], ConfigError, "n must be a positive number of images, but got n=-3"),
        (
            [run, "n=10", "classes=[1,5]"],
            ConfigError,
            "classes must be among the trained classes [0, 1] (qcd, w), but got [5]",
        ),
        ([run, "n=2", f"latents={tmp_path / 'latents.npy'}"], ConfigError, "latent vectors must have shape (n, 8)"),
        (["registered_model=nope@champion", "n=2"], CalolabError, "no registered model 'nope'"),
    ]
    for args, error, message in cases:
        cfg = compose_config("sample_images", [*args, f"out={out}", *lagan_run["common"]])
        with pytest.raises(error) as caught:
            sample(cfg)
        assert message in str(caught.value)
        assert not out.exists() and not list(tmp_path.glob(".bad.root*"))
    # from the command line: one line on stderr, exit code 2
    res = run_cli("sample", run, "n=0", f"out={out}", *lagan_run["common"])
    assert res.returncode == 2
    assert res.stderr.strip() == "calolab sample: error: n must be a positive number of images, but got n=0"
    assert not out.exists()
