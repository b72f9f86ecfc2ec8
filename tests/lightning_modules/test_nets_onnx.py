"""Each published jet net exports to ONNX (torch.export, dynamo=True) and scores as PyTorch does, even kernels included."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from calolab.app import CONF_DIR
from calolab.export import check_parity, export_onnx
from lightning_modules.nets import LayerCNN

CASES = {
    "qg_cnn": ({"image": (2, 33, 33)}, {}),
    "qg_cnn_valid": ({"image": (2, 33, 33)}, {"padding": "valid"}),
    "wtag_cnn": ({"image": (1, 25, 25)}, {}),
    "wtag_maxout": ({"image": (1, 25, 25)}, {}),
}


def events(shapes: dict, n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, *shape)).astype(np.float32) for shape in shapes.values()]


@pytest.mark.parametrize("case", CASES)
def test_published_jet_nets_export_with_parity(case, tmp_path):
    shapes, overrides = CASES[case]
    config = OmegaConf.load(CONF_DIR / "net" / f"{case.removesuffix('_valid')}.yaml")
    torch.manual_seed(0)
    net = instantiate(config, input_shapes=shapes, **overrides)
    path = export_onnx(net, list(shapes), shapes, tmp_path / f"{case}.onnx")
    diff = check_parity(path, net, events(shapes, 40), atol=1e-4, rtol=1e-4, batch_sizes=(1, 7))
    assert 0 <= diff < 1e-4


def test_even_kernels_on_small_layers_export_with_parity(tmp_path):
    """Asymmetric zero-padding on every photon layer, including a 2x3 Tile image under an 8x8 kernel."""
    shapes = {"EMB1": (1, 56, 3), "EMB2": (1, 7, 11), "TileBar0": (1, 2, 3)}
    torch.manual_seed(1)
    net = LayerCNN(shapes, channels=[4, 4], kernel_size=[8, 4], conv_dropout=0.1, dense=[8])
    path = export_onnx(net, list(shapes), shapes, tmp_path / "even.onnx")
    assert check_parity(path, net, events(shapes, 20, seed=2), atol=1e-4, rtol=1e-4, batch_sizes=(3,)) < 1e-4
