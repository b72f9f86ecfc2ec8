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


@functools.cache
def experiment_choices() -> dict[str, tuple[str, str]]:
    """experiment preset -> (its net option, its model option)."""
    from hydra import compose, initialize_config_dir

    out = {}
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for path in sorted((CONF_DIR / "experiment").glob("*.yaml")):
            cfg = compose("train", [f"experiment={path.stem}"], return_hydra_config=True)
            out[path.stem] = (cfg.hydra.runtime.choices["net"], cfg.hydra.runtime.choices["model"])
    return out


#: net options that no preset chooses by default -> the experiment they are an alternative in
ALTERNATIVE_NETS = {"lagan_small": "lagan", "pion_cnn": "pion_id", "pion_dense": "pion_id"}
#: overrides a preset needs to build without a trained run (photon_id_paed: the CNN on raw images)
BUILD_OVERRIDES = {"photon_id_paed": ["net.denoiser_run=null"]}
EXPERIMENT_NETS = [(p.stem, None) for p in sorted((CONF_DIR / "experiment").glob("*.yaml"))] + [
    (experiment, net) for net, experiment in sorted(ALTERNATIVE_NETS.items())
]


@pytest.mark.parametrize(("experiment", "net_option"), EXPERIMENT_NETS, ids=lambda v: v or "default")
def test_every_experiment_builds_its_task_from_its_data_shapes(experiment, net_option, tmp_path):
    """The preset's net from its own data's input shapes, the task around it, its optimisers, and one
    forward pass of the module it exports (on the task's own example inputs, else zeros of the data's shapes)."""
    from calolab.app import compose_config

    overrides = [f"experiment={experiment}", f"paths.data_dir={tmp_path}", *BUILD_OVERRIDES.get(experiment, [])]
    cfg = compose_config("train", overrides + ([f"net={net_option}"] if net_option else []))
    dm = instantiate(cfg.data, _convert_="all")  # reads nothing yet
    net = instantiate(cfg.net, input_shapes=dm.input_shapes, _convert_="all")
    task = instantiate(cfg.model, net=net, _convert_="all")
    assert task.configure_optimizers() is not None
    examples = task.example_inputs(3)
    inputs = (
        [torch.as_tensor(v) for v in examples.values()]
        if examples is not None
        else [torch.zeros(3, *dm.input_shapes[name]) for name in dm.input_names]
    )
    with torch.no_grad():
        out = task.inference_module().eval()(*inputs)
    for tensor in out if isinstance(out, tuple | list) else [out]:
        assert tensor.shape[0] == 3 and torch.isfinite(tensor).all()


@pytest.mark.parametrize("path", NETS + MODELS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_net_and_model_is_some_experiments(path):
    """So that the experiment test above builds it (with data shapes it is made for)."""
    used = {choice for pair in experiment_choices().values() for choice in pair} | set(ALTERNATIVE_NETS)
    assert path.stem in used, (
        f"{path.parent.name}/{path.stem}.yaml is no experiment preset's {path.parent.name}: make it one's default "
        "or list it in ALTERNATIVE_NETS"
    )


def test_photon_cnn_config_is_the_seeds():
    net = instantiate(OmegaConf.load(CONF_DIR / "net" / "photon_cnn.yaml"), input_shapes=PHOTON_SHAPES)
    assert isinstance(net, PhotonCNN)
    assert 1_000_000 <= sum(p.numel() for p in net.parameters()) <= 2_000_000


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
