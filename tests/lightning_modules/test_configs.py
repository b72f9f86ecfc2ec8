"""Every option of the ``net`` and ``model`` config groups builds, and its keys are exactly the constructor's arguments."""

from __future__ import annotations

import functools
import inspect

import pytest
import torch
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from calolab.app import CONF_DIR
from lightning_modules import BinaryClassifier
from lightning_modules.nets import PhotonCNN

PHOTON_SHAPES = {"EMB1": (1, 56, 3), "EMB2": (1, 7, 11), "EMB3": (1, 4, 11), "TileBar0": (1, 2, 3)}
NETS = sorted((CONF_DIR / "net").glob("*.yaml"))
MODELS = sorted((CONF_DIR / "model").glob("*.yaml"))
# passed by the training command, never typed in a config file
PASSED_IN = {"input_shapes", "net"}


def constructor_args(target: str) -> set[str]:
    params = inspect.signature(get_class(target).__init__).parameters
    return {name for name in params if name != "self"} - PASSED_IN


def test_groups_are_not_empty():
    assert "photon_cnn" in [p.stem for p in NETS]
    assert "classifier" in [p.stem for p in MODELS]


@pytest.mark.parametrize("path", NETS + MODELS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_keys_are_the_constructor_args(path):
    cfg = OmegaConf.load(path)
    assert set(cfg) - {"_target_"} == constructor_args(cfg._target_)


@pytest.mark.parametrize("path", NETS, ids=lambda p: p.stem)
def test_every_net_builds_from_data_shapes(path):
    net = instantiate(OmegaConf.load(path), input_shapes=PHOTON_SHAPES)
    assert net.input_names == list(PHOTON_SHAPES)
    out = net.eval()(*(torch.zeros(3, *shape) for shape in PHOTON_SHAPES.values()))
    assert out.shape == (3,)


def test_photon_cnn_config_is_the_seeds():
    net = instantiate(OmegaConf.load(CONF_DIR / "net" / "photon_cnn.yaml"), input_shapes=PHOTON_SHAPES)
    assert isinstance(net, PhotonCNN)
    assert 1_000_000 <= sum(p.numel() for p in net.parameters()) <= 2_000_000


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_every_model_builds_around_a_net(path):
    net = PhotonCNN(PHOTON_SHAPES, channels=[2], dense=[4])
    model = instantiate(OmegaConf.load(path), net=net)
    assert model.net is net
    optimizer = model.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    assert isinstance(optimizer, torch.optim.Optimizer)


def test_classifier_config_is_adam_1e4_without_scheduler():
    cfg = OmegaConf.load(CONF_DIR / "model" / "classifier.yaml")
    model = instantiate(cfg, net=PhotonCNN(PHOTON_SHAPES, channels=[2], dense=[4]))
    assert isinstance(model, BinaryClassifier)
    assert isinstance(model.optimizer_factory, functools.partial)
    optimizer = model.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.param_groups[0]["lr"] == 1e-4
    assert model.hparams.scheduler is None and model.hparams.compile is False


def test_hydra_lists_reach_the_optimiser_as_plain_lists():
    cfg = OmegaConf.load(CONF_DIR / "model" / "classifier.yaml")
    cfg.optimizer.betas = [0.8, 0.9]
    model = instantiate(cfg, net=PhotonCNN(PHOTON_SHAPES, channels=[2], dense=[4]))
    assert type(model.optimizer_factory.keywords["betas"]) is list  # not ListConfig: checkpoints stay weights_only
    assert model.configure_optimizers().param_groups[0]["betas"] == (0.8, 0.9)
    assert model.hparams.optimizer["betas"] == [0.8, 0.9]
