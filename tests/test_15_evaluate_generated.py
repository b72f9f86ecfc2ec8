"""Issue 15: a W tagger evaluated on jets a LAGAN generated, through ``calolab sample`` and ``calolab evaluate``.

A tagger (``experiment=wtag_cnn``, per-pixel standardisation on) and a LAGAN are smoke-trained on a
jet file the test writes; ``calolab sample`` (in this process) writes generated jets from the LAGAN run;
``calolab evaluate run_id=<tagger> data.files=[<file>]`` scores them with the tagger's own evaluation:

- a new run under the tagger's (``calolab.kind=evaluation``, the source run, the file as its
  dataset input), every generated jet in the test set, the scores those of the tagger on the
  generated images with the tagger's training preprocessing (normalised to the image pT, then the
  standardisation of its *training* split), the baselines that the images give (tau21, mass window)
  and not the BDT that needs jet eta (a placeholder in a generated file);
- the tagger's run untouched (status, metrics);
- a file of images of another size: one clear error naming it, a non-zero exit, no run created.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from mlflow.tracking import MlflowClient

from calolab.app import compose_config
from calolab.commands.sample import sample, write_sample
from calolab.generation.sampled_images import frame_from_data, make_record
from calolab.pipeline.restore import restore_run
from calolab.pipeline.train import train
from calolab.tracking import TrackingStore
from tests.conftest import run_cli
from tests.datamodules.jet_samples import write_jets
from tests.test_15_lagan import TINY_OVERRIDES

N_GENERATED = 60


#: one epoch of two batches each: what is tested is the hand-over, not the training
SHORT = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A smoke-trained tagger and LAGAN on the same jets, and the LAGAN's sampled jets."""
    root = tmp_path_factory.mktemp("evalgen")
    write_jets(root / "data", n_files=1, per_file=300, seed=15)
    db = f"sqlite:///{root / 'mlflow.db'}"
    common = [f"tracking.uri={db}", f"paths.data_dir={root}"]
    data = ["debug=smoke", *SHORT, "generate=null", f"data.files=[{root}/data/*.root]", f"data.cache_dir={root}/cache"]
    data.append("tracking.log_models=false")  # the checkpoint and onnx/model.onnx are what is used
    tagger = train(
        compose_config(
            "train",
            [
                "experiment=wtag_cnn",
                *data,
                "data.standardise=true",  # the training split's per-pixel standardisation must be reused
                "evaluation.bootstrap_replicas=100",
                "evaluation.correlation_maps=false",
                *common,
            ],
        )
    )
    lagan = train(
        compose_config(
            "train",
            ["experiment=lagan", *data, "data.selection=null", "evaluation.grid=[2,3]", *TINY_OVERRIDES, *common],
        )
    )
    # `calolab sample` in this process (its command line is test_15_lagan's)
    out = root / "gen" / "lagan.root"
    sample(
        compose_config(
            "sample_images", [f"run_id={lagan['run_id']}", f"n={N_GENERATED}", f"out={out}", "seed=4", *common]
        )
    )
    return {"root": root, "db": db, "common": common, "tagger": tagger, "lagan": lagan, "sampled": out}


@pytest.mark.slow
def test_tagger_evaluated_on_generated_jets_in_a_new_run(runs, tmp_path):
    client = MlflowClient(tracking_uri=runs["db"])
    tagger_id = runs["tagger"]["run_id"]
    before = client.get_run(tagger_id)
    res = run_cli("evaluate", f"run_id={tagger_id}", f"data.files=[{runs['sampled']}]", *runs["common"])
    assert res.returncode == 0, res.stderr
    assert "AUC on these events:" in res.stdout and "AUC on the run's own test split:" in res.stdout
    assert "skipped baseline bdt: needs ['jet_eta']" in res.stdout  # a log line, not a crash

    # the new run: under the tagger, never a training, with the sampled file as its dataset
    children = client.search_runs(
        [before.info.experiment_id], filter_string=f"tags.`calolab.source_run_id` = '{tagger_id}'"
    )
    assert len(children) == 1
    new = children[0]
    assert new.info.status == "FINISHED" and new.info.run_id != tagger_id
    tags = new.data.tags
    assert tags["calolab.kind"] == "evaluation" and tags["mlflow.parentRunId"] == tagger_id
    assert tags["calolab.evaluated_files"] == str(runs["sampled"])
    (dataset,) = [d for d in new.inputs.dataset_inputs if d.dataset.name == "lagan"]
    assert {t.key: t.value for t in dataset.tags}["mlflow.data.context"] == "evaluation"
    assert tags["dataset.digest"].startswith(dataset.dataset.digest)
    assert dataset.dataset.digest != before.data.tags["dataset.digest"][: len(dataset.dataset.digest)]

    # every generated jet is the test set; the image baselines are there, the BDT (jet eta) is not
    m = new.data.metrics
    assert m["test/n_events"] == N_GENERATED and m["test/n_signal"] == N_GENERATED // 2
    assert 0.0 <= m["test/auc"] <= 1.0 and m["test/auc_err"] > 0
    assert "test/tau21_auc" in m and "test/mass_tau21_rej" in m
    assert not any(k.startswith("test/bdt") for k in m)
    assert m["test/n_events"] != before.data.metrics["test/n_events"]
    plots = {a.path for a in client.list_artifacts(new.info.run_id, "plots")}
    assert "plots/roc.png" in plots

    # the scores: the tagger on the generated images / their pT sum, standardised with its
    # *training* split's per-pixel mean and std (not refitted on the generated jets)
    lagan_id = runs["lagan"]["run_id"]
    onnx_path = client.download_artifacts(lagan_id, "onnx/model.onnx", str(tmp_path))
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    latent = np.random.default_rng(4).standard_normal((N_GENERATED, 8)).astype(np.float32)
    label = (np.arange(N_GENERATED) % 2).astype(np.float32)
    (images,) = sess.run(None, {"latent": latent, "label": label})
    total = images.sum(axis=(1, 2, 3), keepdims=True)
    normalised = np.divide(images, total, out=np.zeros_like(images), where=total > 0)
    restored = restore_run(tagger_id, TrackingStore.resolve(runs["db"], str(runs["root"])))
    stats = restored.dm.preprocessing_summary()["standardisation"]
    mean, std = np.asarray(stats["mean"], np.float32), np.asarray(stats["std"], np.float32)
    standardised = (normalised - mean) * np.divide(1.0, std, out=np.ones_like(std), where=std > 0)
    expected = restored.model.eval().predict({"image": standardised}, ["image"])["score"]
    logged = np.load(client.download_artifacts(new.info.run_id, "evaluation/test_scores.npy", str(tmp_path)))
    np.testing.assert_allclose(logged, expected, rtol=1e-3, atol=1e-3)
    refit_std = normalised.std(0)
    refitted = (normalised - normalised.mean(0)) * np.divide(1.0, refit_std, out=np.ones_like(std), where=refit_std > 0)
    assert not np.allclose(logged, restored.model.predict({"image": refitted}, ["image"])["score"], rtol=0, atol=1e-6)

    # the tagger's own run: same status, same metrics, no re-evaluation error
    after = client.get_run(tagger_id)
    assert after.info.status == before.info.status == "FINISHED"
    assert after.info.end_time == before.info.end_time
    assert after.data.metrics == before.data.metrics
    assert "calolab.reevaluation_error" not in after.data.tags


@pytest.mark.slow
def test_generated_images_of_another_size_are_one_clear_error(runs, tmp_path):
    client = MlflowClient(tracking_uri=runs["db"])
    tagger_id = runs["tagger"]["run_id"]
    experiment = client.get_run(tagger_id).info.experiment_id
    n_runs = len(client.search_runs([experiment]))
    rng = np.random.default_rng(0)
    images = rng.exponential(1e3, (20, 1, 32, 32)).astype(np.float32) * (rng.random((20, 1, 32, 32)) < 0.1)
    frame_cfg = {"centre": "leading_subjet", "rotate": "subleading_subjet", "flip": True, "subjet_radius": 0.3}
    frame = frame_from_data({**frame_cfg, "channels": ["pt"]}, (1, 32, 32), [1.6, 1.6])
    bad = tmp_path / "big.root"
    write_sample(bad, images, np.arange(20) % 2, [1.6, 1.6], make_record("a 32x32 generator", "jets", frame))
    res = run_cli("evaluate", f"run_id={tagger_id}", f"data.files=[{bad}]", *runs["common"])
    assert res.returncode != 0
    errors = [line for line in res.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, res.stderr
    assert str(bad) in errors[0] and "25x25" in errors[0] and "shape=[32, 32]" in errors[0], errors[0]
    assert "Traceback" not in res.stderr
    assert len(client.search_runs([experiment])) == n_runs  # nothing recorded for bad input
    assert client.get_run(tagger_id).info.status == "FINISHED"
    # the record is what the file says about its images
    import uproot

    with uproot.open(bad) as f:
        assert json.loads(str(f["calolab_sample"]))["image"]["shape"] == [32, 32]
