"""The task interface: one inference path (predict) for evaluation, export parity and promotion;
weighted validation AUC equal to the test evaluation's definition; no hyper-parameters logged twice."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from calolab.errors import InputFileError
from calolab.evaluation.metrics import auc
from calolab.export import check_parity, export_onnx
from lightning_modules import BinaryClassifier, SignalProbability, Task
from lightning_modules.classifier import WeightedAUROC
from lightning_modules.nets import PhotonCNN

SHAPES = {"EMB2": (1, 7, 11), "TileBar0": (1, 2, 3)}


def classifier(seed: int = 0) -> BinaryClassifier:
    torch.manual_seed(seed)
    net = PhotonCNN(SHAPES, channels=[4], dense=[16])
    return BinaryClassifier(net, optimizer=functools.partial(torch.optim.Adam, lr=1e-3))


def arrays(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=(n, *s)).astype(np.float32) for k, s in SHAPES.items()}


def test_classifier_is_a_task_with_one_score_output():
    task = classifier()
    assert isinstance(task, Task) and task.kind == "classifier"
    assert task.output_names == ("score",)
    assert isinstance(task.inference_module(), SignalProbability)
    # the inference module is not a second copy of the net in the checkpoint
    assert all(k.startswith("net.") for k in task.state_dict())


def test_predict_is_the_sigmoid_of_the_net_in_eval_mode_in_any_batch_size():
    task = classifier().train()
    x = arrays(37)
    out = task.predict(x, list(SHAPES), batch_size=8)
    assert set(out) == {"score"} and out["score"].shape == (37,) and out["score"].dtype == np.float32
    with torch.no_grad():
        task.net.eval()
        expected = torch.sigmoid(task.net(*(torch.from_numpy(x[k]) for k in SHAPES))).numpy()
    task.net.train()
    np.testing.assert_allclose(out["score"], expected, rtol=1e-5, atol=1e-6)
    assert task.training and task.net.training  # modes restored
    # one batch or many: the same scores (up to float32 summation order)
    np.testing.assert_allclose(task.predict(x, list(SHAPES), batch_size=1000)["score"], out["score"], atol=1e-6)
    with pytest.raises(Exception, match="missing"):
        task.predict({"EMB2": x["EMB2"]}, list(SHAPES))


def test_onnx_of_the_inference_module_matches_predict(tmp_path):
    task = classifier()
    path = export_onnx(
        task.inference_module(), list(SHAPES), SHAPES, tmp_path / "m.onnx", output_names=task.output_names
    )
    x = arrays(20)
    names = list(SHAPES)
    diff = check_parity(
        path, lambda a: task.predict(dict(zip(names, a)), names), [x[k] for k in names], atol=1e-5, rtol=0
    )
    assert diff < 1e-5
    other = classifier(seed=1)  # another task's predict must fail the check
    with pytest.raises(Exception, match="parity check failed"):
        check_parity(
            path, lambda a: other.predict(dict(zip(names, a)), names), [x[k] for k in names], atol=1e-5, rtol=0
        )


def test_load_weights_restores_a_checkpoint_into_a_fresh_task(tmp_path):
    task = classifier(seed=0)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(task)
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    fresh = classifier(seed=5)
    x = arrays(10)
    assert not np.allclose(fresh.predict(x, list(SHAPES))["score"], task.predict(x, list(SHAPES))["score"])
    fresh.load_weights(tmp_path / "a.ckpt")
    np.testing.assert_array_equal(fresh.predict(x, list(SHAPES))["score"], task.predict(x, list(SHAPES))["score"])
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputFileError, match="bad.ckpt"):
        fresh.load_weights(tmp_path / "bad.ckpt")


def test_weighted_val_auc_is_the_test_evaluations_auc():
    rng = np.random.default_rng(3)
    n = 2000
    label = (rng.random(n) < 0.4).astype(np.float32)
    score = np.clip(0.5 + 0.3 * (label - 0.5) + rng.normal(scale=0.3, size=n), 0, 1).astype(np.float32)
    # weights correlated with the score: the weighted and unweighted AUCs differ
    weight = (0.2 + score**3 * 5).astype(np.float32)
    metric = WeightedAUROC()
    for a in range(0, n, 300):  # several batches, as an epoch
        metric.update(
            torch.from_numpy(score[a : a + 300]),
            torch.from_numpy(label[a : a + 300]),
            torch.from_numpy(weight[a : a + 300]),
        )
    value = float(metric.compute())
    assert value == pytest.approx(auc(label, score, weight), abs=1e-6)
    assert abs(value - auc(label, score)) > 1e-3
    metric.reset()
    metric.update(torch.ones(3), torch.ones(3), torch.ones(3))  # one class only: undefined
    assert np.isnan(float(metric.compute()))


def test_hyper_parameters_are_not_sent_to_the_logger():
    """The run's params are the flattened config; Lightning must not log hparams a second time."""
    task = classifier()
    assert task._log_hyperparams is False
