"""PhotonCNN (LayerCNN with the photon defaults): shapes, parameter count, single-image inputs, determinism, gradients, bad config."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from calolab.errors import ConfigError
from lightning_modules.nets import PhotonCNN

PHOTON_SHAPES = {"EMB1": (1, 56, 3), "EMB2": (1, 7, 11), "EMB3": (1, 4, 11), "TileBar0": (1, 2, 3)}


def batch(shapes: dict, n: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(n, *shape, generator=gen) for shape in shapes.values())


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("n", [1, 5])
def test_output_is_one_logit_per_event(n):
    net = PhotonCNN(PHOTON_SHAPES).eval()
    out = net(*batch(PHOTON_SHAPES, n))
    assert out.shape == (n,)
    assert torch.isfinite(out).all()
    assert net.input_names == list(PHOTON_SHAPES)


def test_default_parameter_count_as_the_seeds():
    count = n_params(PhotonCNN(PHOTON_SHAPES))
    print(f"PhotonCNN default parameters with the four photon layers: {count:,}")
    assert 1_000_000 <= count <= 2_000_000


def test_sizes_come_from_config():
    small = PhotonCNN(PHOTON_SHAPES, channels=[4], dense=[8])
    assert n_params(small) < 20_000
    # no pooling keeps every cell: EMB1 alone then gives 4 * 56 * 3 features
    unpooled = PhotonCNN(
        PHOTON_SHAPES, channels=[4], dense=[8], pool={"EMB1": False, "EMB2": True, "EMB3": True, "TileBar0": True}
    )
    assert unpooled.n_features - small.n_features == 4 * 56 * 3 - 4 * 28 * 1
    kernels = PhotonCNN(
        PHOTON_SHAPES, channels=[4], dense=[8], kernel_size={"EMB1": 5, "EMB2": 3, "EMB3": 3, "TileBar0": 1}
    )
    assert kernels.branches[0][0].kernel_size == (5, 5) and kernels.branches[3][0].kernel_size == (1, 1)
    assert kernels(*batch(PHOTON_SHAPES, 2)).shape == (2,)


@pytest.mark.parametrize("shape", [(25, 25), (1, 25, 25), (3, 33, 33), (1, 1), (2, 3)])
def test_single_image_input(shape):
    shapes = {"image": shape}
    net = PhotonCNN(shapes, channels=[8, 16, 32], dense=[16]).eval()
    assert net(*batch(shapes, 4)).shape == (4,)


def test_deep_branches_never_shrink_a_small_layer_below_one_cell():
    # four pooling stages: 2x3 Tile goes 1x1 after the first and stays there
    net = PhotonCNN(PHOTON_SHAPES, channels=[2, 2, 2, 2], dense=[4])
    assert net(*batch(PHOTON_SHAPES, 3)).shape == (3,)
    assert net.n_features == 2 * (3 + 1 + 1 + 1)  # EMB1 56x3 -> 3x1; EMB2, EMB3, Tile -> 1x1


def test_eval_forward_is_deterministic_and_train_forward_drops_out():
    net = PhotonCNN(PHOTON_SHAPES)
    x = batch(PHOTON_SHAPES, 16)
    net.eval()
    assert torch.equal(net(*x), net(*x))
    net.train()
    torch.manual_seed(1)
    assert not torch.equal(net(*x), net(*x))  # alpha-dropout is active in training


def test_gradients_reach_every_branch():
    net = PhotonCNN(PHOTON_SHAPES)
    net(*batch(PHOTON_SHAPES, 8)).sum().backward()
    for name, branch in zip(net.input_names, net.branches):
        grads = [p.grad for p in branch.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), name


def test_selu_uses_alpha_dropout_and_relu_plain_dropout():
    selu = PhotonCNN(PHOTON_SHAPES)
    relu = PhotonCNN(PHOTON_SHAPES, activation="relu")
    assert any(isinstance(m, nn.AlphaDropout) for m in selu.modules())
    assert any(type(m) is nn.Dropout for m in relu.modules())
    assert not any(isinstance(m, nn.AlphaDropout) for m in relu.modules())
    assert [m.p for m in selu.modules() if isinstance(m, nn.AlphaDropout)] == [0.08, 0.08]
    assert not any(isinstance(m, nn.Dropout | nn.AlphaDropout) for m in PhotonCNN(PHOTON_SHAPES, dropout=0).modules())


@pytest.mark.parametrize(("init", "gain"), [("he", math.sqrt(2.0)), ("lecun", 1.0)])
def test_initialisation(init, gain):
    torch.manual_seed(0)
    first_dense = PhotonCNN(PHOTON_SHAPES, init=init).head[0]  # (1024, 1216)
    expected = gain / math.sqrt(first_dense.in_features)
    assert first_dense.weight.std().item() == pytest.approx(expected, rel=0.02)
    assert torch.all(first_dense.bias == 0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kernel_size": 0}, "kernel_size"),  # even kernels are allowed since the jet CNNs (test_nets_layer_cnn.py)
        ({"channels": []}, "channels"),
        ({"dropout": 1.0}, "dropout"),
        ({"activation": "swish"}, "activation"),
        ({"init": "orthogonal"}, "init"),
        ({"pool": {"EMB1": True}}, "pool"),
    ],
)
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        PhotonCNN(PHOTON_SHAPES, **kwargs)


def test_bad_shapes_and_input_count():
    with pytest.raises(ConfigError, match="input_shapes"):
        PhotonCNN({"EMB1": (56,)})
    with pytest.raises(ConfigError, match="input_shapes"):
        PhotonCNN({})
    net = PhotonCNN(PHOTON_SHAPES)
    with pytest.raises(ConfigError, match="expects 4 inputs"):
        net(*batch(PHOTON_SHAPES, 2)[:3])
