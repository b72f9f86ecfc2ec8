"""Every option of every config group composes, and every `_target_` instantiates with keys
that are exactly its constructor's arguments (house style: config maps to code)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hydra.utils import get_class, get_method, instantiate
from omegaconf import OmegaConf

from calolab.app import CONF_DIR, compose_config

TRAIN_GROUPS = [
    "data",
    "net",
    "model",
    "trainer",
    "callbacks",
    "tracking",
    "evaluation",
    "export",
    "experiment",
    "debug",
    "sweep",
]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def targets(node, path=""):
    """Yield (path, node) for every mapping with a _target_ inside ``node``."""
    if isinstance(node, dict):
        if "_target_" in node:
            yield path, node
        for k, v in node.items():
            yield from targets(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from targets(v, f"{path}[{i}]")


def check_keys_match_constructor(path: str, node: dict) -> None:
    target = node["_target_"]
    try:
        obj = get_class(target)
        sig = inspect.signature(obj.__init__)
    except (ImportError, ValueError):
        sig = inspect.signature(get_method(target))
    params = {n for n, p in sig.parameters.items() if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    accepts_kwargs = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    keys = {k for k in node if not k.startswith("_")}
    unknown = keys - params
    assert accepts_kwargs or not unknown, f"{path}: keys {sorted(unknown)} are not arguments of {target}"


@pytest.mark.parametrize("group", TRAIN_GROUPS)
def test_every_train_option_composes(group, tmp_path):
    for option in options(group):
        cfg = compose_config("train", [f"{group}={option}", f"paths.data_dir={tmp_path}"])
        plain = OmegaConf.to_container(cfg, resolve=False)
        for path, node in targets(plain):
            check_keys_match_constructor(path, node)


@pytest.mark.parametrize("option", options("sample"))
def test_every_sample_option_instantiates(option, tmp_path):
    cfg = compose_config("generate", [f"sample={option}", f"out={tmp_path}/x"])
    sample = instantiate(OmegaConf.to_container(cfg.sample, resolve=True))
    assert sample.tree in ("photons", "jets", "particles", "pions")
    for path, node in targets(OmegaConf.to_container(cfg.sample)):
        check_keys_match_constructor(path, node)


@pytest.mark.parametrize("option", options("registry"))
def test_every_registry_option_composes(option):
    from calolab.registry.policy import GatePolicy

    cfg = compose_config("promote", [f"registry={option}"])
    assert GatePolicy.from_config(cfg.registry) is not None


@pytest.mark.parametrize("option", options("trainer"))
def test_every_trainer_option_instantiates_on_cpu(option, tmp_path):
    cfg = compose_config(
        "train",
        [
            f"trainer={option}",
            "trainer.accelerator=cpu",
            "trainer.devices=1",
            "++trainer.num_nodes=1",
            "trainer.precision=32-true",
        ],
    )
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False, default_root_dir=str(tmp_path))
    assert trainer.max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize("option", options("callbacks"))
def test_every_callbacks_option_instantiates(option):
    cfg = compose_config("train", [f"callbacks={option}"])
    for name, node in (cfg.callbacks or {}).items():
        assert instantiate(node) is not None, name


def test_net_and_model_instantiate_with_data_shapes():
    cfg = compose_config("train", [])
    shapes = {k: (1, *v.shape) for k, v in cfg.data.inputs.items()}
    net = instantiate(cfg.net, input_shapes=shapes)
    model = instantiate(cfg.model, net=net)
    assert list(net.input_names) == list(cfg.data.inputs)
    assert model.net is net


def test_every_conf_file_is_reachable():
    """No orphan config: every group folder holds YAML files a test above composes."""
    groups = {p.name for p in CONF_DIR.iterdir() if p.is_dir()}
    covered = set(TRAIN_GROUPS) | {"sample", "paths", "hydra", "registry"}
    assert groups <= covered, f"config groups without a composition test: {sorted(groups - covered)}"
    assert all(any(Path(CONF_DIR / g).glob("*.yaml")) for g in groups)
