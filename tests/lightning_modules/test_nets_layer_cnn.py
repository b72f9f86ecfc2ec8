"""LayerCNN as the published jet CNNs: per-convolution kernels, even kernels, valid padding, pool sizes, conv dropout,
parameter counts by hand, bad settings, and nets pickled under the old name PhotonCNN."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from calolab.app import CONF_DIR
from calolab.errors import ConfigError
from lightning_modules.nets import LayerCNN, PhotonCNN
from lightning_modules.nets import photon_cnn as old_module

PHOTON_SHAPES = {"EMB1": (1, 56, 3), "EMB2": (1, 7, 11), "EMB3": (1, 4, 11), "TileBar0": (1, 2, 3)}
QG_SHAPES = {"image": (2, 33, 33)}  # pT and charged counts, 33 x 33 over 0.8 x 0.8
W_SHAPES = {"image": (1, 25, 25)}  # pT, 25 x 25 over 2.5 x 2.5
LEGACY = Path(__file__).parent / "data" / "photon_cnn_before_rename.pt"


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def conv_params(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k + c_out


def dense_params(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def convs(branch: nn.Module) -> list[nn.Conv2d]:
    return [m for m in branch if isinstance(m, nn.Conv2d)]


def from_config(name: str, shapes: dict, **overrides) -> nn.Module:
    return instantiate(OmegaConf.load(CONF_DIR / "net" / f"{name}.yaml"), input_shapes=shapes, **overrides)


def test_the_old_name_is_the_same_class():
    assert PhotonCNN is LayerCNN and old_module.PhotonCNN is LayerCNN


def test_a_net_pickled_as_photon_cnn_before_the_rename_still_loads_and_scores_the_same():
    """The fixture was written by torch.save with the PhotonCNN class of commit 288df1b, as MLflow pickles it."""
    saved = torch.load(LEGACY, weights_only=False)
    net = saved["net"]
    assert type(net) is LayerCNN
    with torch.no_grad():
        assert torch.equal(net(*saved["inputs"]), saved["output"])
    # and its weights load into a net built today with the same settings: a checkpoint's state_dict fits
    fresh = LayerCNN(PHOTON_SHAPES, channels=[2, 3], dense=[4]).eval()
    fresh.load_state_dict(net.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(*saved["inputs"]), saved["output"])


def test_kernels_per_convolution_and_per_layer():
    net = LayerCNN(W_SHAPES, channels=[2, 2, 2], kernel_size=[11, 3, 3], dense=[])
    assert [c.kernel_size for c in convs(net.branches[0])] == [(11, 11), (3, 3), (3, 3)]
    mixed = LayerCNN(
        PHOTON_SHAPES,
        channels=[2, 2],
        kernel_size={"EMB1": [5, 3], "EMB2": [3, 1], "EMB3": 3, "TileBar0": 1},
        dense=[4],
    )
    got = {name: [c.kernel_size[0] for c in convs(b)] for name, b in zip(mixed.input_names, mixed.branches)}
    assert got == {"EMB1": [5, 3], "EMB2": [3, 1], "EMB3": [3, 3], "TileBar0": [1, 1]}
    assert mixed(*(torch.randn(2, *s) for s in PHOTON_SHAPES.values())).shape == (2,)


@pytest.mark.parametrize("k", [2, 4, 8])
@pytest.mark.parametrize("shape", [(1, 33, 33), (1, 7, 11), (2, 2, 3), (1, 1, 1)])
def test_even_kernels_keep_the_spatial_size(k, shape):
    net = LayerCNN({"x": shape}, channels=[3, 3], kernel_size=k, pool=False, dense=[])
    c, h, w = shape
    assert net.n_features == 3 * h * w
    features = net.branches[0](torch.randn(4, *shape))
    assert features.shape == (4, 3 * h * w)


def test_even_kernel_padding_puts_the_extra_cell_after_as_keras():
    """4x4 kernel of ones on a 5x5 image of ones: 1 cell padded before, 2 after (TensorFlow 'same')."""
    net = LayerCNN({"x": (1, 5, 5)}, channels=[1], kernel_size=4, pool=False, dense=[], activation="relu")
    conv = convs(net.branches[0])[0]
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.zero_()
        out = net.branches[0][:2](torch.ones(1, 1, 5, 5))[0, 0]  # pad, conv
    assert out.shape == (5, 5)
    assert out[0, 0] == 9  # rows/cols -1..2: 3 x 3 real cells
    assert out[-1, -1] == 4  # rows/cols 3..6: 2 x 2 real cells
    assert out[2, 2] == 16


def test_valid_padding_shrinks_by_kernel_minus_one_and_refuses_too_small_images():
    net = LayerCNN(QG_SHAPES, channels=[64, 64, 64], kernel_size=[8, 4, 4], padding="valid", dense=[128])
    # 33 -conv8-> 26 -pool-> 13 -conv4-> 10 -pool-> 5 -conv4-> 2 -pool-> 1
    assert net.n_features == 64
    assert net(torch.randn(3, *QG_SHAPES["image"])).shape == (3,)
    with pytest.raises(ConfigError, match=r"'TileBar0': convolution 1 has a 3 x 3 kernel.*only 2 x 3 cells"):
        LayerCNN({"TileBar0": (1, 2, 3)}, padding="valid")
    with pytest.raises(ConfigError, match=r"'EMB1': convolution 2 has a 3 x 3 kernel.*only 27 x 1 cells"):
        LayerCNN(PHOTON_SHAPES, padding="valid")  # 56x3 -conv3-> 54x1 -pool-> 27x1: too narrow for the second


def test_pool_sizes_per_convolution():
    net = LayerCNN(W_SHAPES, channels=[2, 2, 2], kernel_size=[11, 3, 3], pool=[2, 3, 3], dense=[])
    assert [m.kernel_size for m in net.branches[0] if isinstance(m, nn.MaxPool2d)] == [(2, 2), (3, 3), (3, 3)]
    assert net.n_features == 2 * 1 * 1  # 25 -> 12 -> 4 -> 1
    # a pool larger than an axis covers the axis: a 2x3 image pooled by 3 becomes 1x1, never 0
    tile = LayerCNN({"t": (2, 3)}, channels=[2], pool=3, dense=[])
    assert tile.n_features == 2 and tile.branches[0](torch.randn(1, 1, 2, 3)).shape == (1, 2)
    # false and 1 both mean no pooling
    assert LayerCNN(W_SHAPES, channels=[2], pool=1, dense=[]).n_features == 2 * 25 * 25
    assert LayerCNN(W_SHAPES, channels=[2, 2], pool=[False, True], dense=[]).n_features == 2 * 12 * 12


def test_conv_dropout_sits_before_each_convolution_and_is_absent_at_zero():
    net = LayerCNN(W_SHAPES, channels=[2, 2, 2], kernel_size=[11, 3, 3], conv_dropout=0.2, dense=[8], dropout=0.1)
    kinds = [type(m) for m in net.branches[0]]
    assert kinds[:4] == [nn.Dropout, nn.Conv2d, nn.SELU, nn.MaxPool2d]
    dropout_at = [i for i, kind in enumerate(kinds) if kind is nn.Dropout]
    assert len(dropout_at) == 3 and all(kinds[i + 1] is nn.Conv2d for i in dropout_at)
    assert [net.branches[0][i].p for i in dropout_at] == [0.2, 0.2, 0.2]
    assert not any(isinstance(m, nn.Dropout) for m in LayerCNN(W_SHAPES, channels=[2], dense=[]).branches[0])
    x = torch.randn(8, *W_SHAPES["image"])
    net.train()
    torch.manual_seed(0)
    assert not torch.equal(net(x), net(x))
    net.eval()
    assert torch.equal(net(x), net(x))


def test_qg_cnn_config_is_komiske_et_al():
    net = from_config("qg_cnn", QG_SHAPES)
    assert isinstance(net, LayerCNN)
    assert [c.out_channels for c in convs(net.branches[0])] == [64, 64, 64]
    assert [c.kernel_size for c in convs(net.branches[0])] == [(8, 8), (4, 4), (4, 4)]
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.branches[0]) == 3
    assert any(isinstance(m, nn.ReLU) for m in net.modules())
    # 'same': 33 -> 16 -> 8 -> 4, so 64 * 4 * 4 features into dense 128
    expected = (
        conv_params(2, 64, 8)
        + conv_params(64, 64, 4)
        + conv_params(64, 64, 4)
        + dense_params(64 * 4 * 4, 128)
        + dense_params(128, 1)
    )
    assert n_params(net) == expected == 270_785
    valid = from_config("qg_cnn", QG_SHAPES, padding="valid")
    expected_valid = expected - dense_params(64 * 4 * 4, 128) + dense_params(64, 128)
    assert n_params(valid) == expected_valid == 147_905
    assert net(torch.randn(2, *QG_SHAPES["image"])).shape == (2,)


def test_wtag_cnn_config_is_de_oliveira_et_al():
    net = from_config("wtag_cnn", W_SHAPES)
    branch = net.branches[0]
    assert [c.kernel_size for c in convs(branch)] == [(11, 11), (3, 3), (3, 3)]
    assert [c.out_channels for c in convs(branch)] == [32, 32, 32]
    assert [m.p for m in branch if isinstance(m, nn.Dropout)] == [0.2, 0.2, 0.2]
    # 'same', pool 2 after each: 25 -> 12 -> 6 -> 3, so 32 * 3 * 3 features into dense 64
    expected = conv_params(1, 32, 11) + 2 * conv_params(32, 32, 3) + dense_params(32 * 3 * 3, 64) + dense_params(64, 1)
    assert n_params(net) == expected == 40_961
    assert net(torch.randn(2, *W_SHAPES["image"])).shape == (2,)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kernel_size": 0}, "kernel_size must be a positive integer, but got 0"),
        (
            {"kernel_size": [3, 3, 3]},
            r"kernel_size given per convolution must have one entry per entry of channels \(2\)",
        ),
        ({"kernel_size": True}, "kernel_size must be a positive integer, but got True"),
        ({"kernel_size": 2.5}, "kernel_size must be a positive integer"),
        ({"kernel_size": {"EMB1": 3}}, "kernel_size given per layer must name exactly the input layers"),
        ({"pool": 0}, "pool must be true, false or a pool size >= 1, but got 0"),
        ({"pool": "yes"}, "pool must be true, false or a pool size"),
        ({"pool": [True]}, "pool given per convolution"),
        ({"padding": "full"}, "padding must be one of"),
        ({"conv_dropout": 1.0}, "conv_dropout must be in"),
        ({"channels": [32, 0]}, "channels must be a list of positive sizes"),
        ({"dense": [0]}, "dense must be a list of positive sizes"),
        ({"dense": 128}, "dense must be a list of positive sizes"),
    ],
)
def test_bad_settings_raise_one_config_error_each(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        LayerCNN(PHOTON_SHAPES, **kwargs)
