"""MaxOutNet: the published layer sizes and parameter count by hand, the MaxOut operation, several inputs, bad config."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from calolab.app import CONF_DIR
from calolab.errors import ConfigError
from lightning_modules.nets import MaxOutNet
from lightning_modules.nets.maxout import MaxOut

W_SHAPES = {"image": (1, 25, 25)}


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_wtag_maxout_config_is_the_published_net():
    net = instantiate(OmegaConf.load(CONF_DIR / "net" / "wtag_maxout.yaml"), input_shapes=W_SHAPES)
    assert isinstance(net, MaxOutNet) and net.input_names == ["image"] and net.n_features == 625
    maxouts = [m for m in net.modules() if isinstance(m, MaxOut)]
    assert [(m.linear.in_features, m.n_out, m.pieces) for m in maxouts] == [(625, 256, 5), (256, 128, 5)]
    dense = [m for m in net.head if isinstance(m, nn.Linear)]
    assert [(d.in_features, d.out_features) for d in dense] == [(128, 64), (64, 25), (25, 1)]
    assert sum(isinstance(m, nn.ReLU) for m in net.head) == 2
    expected = (
        (625 * 256 * 5 + 256 * 5)  # MaxOut 256, 5 pieces: 801,280
        + (256 * 128 * 5 + 128 * 5)  # MaxOut 128, 5 pieces: 164,480
        + (128 * 64 + 64)
        + (64 * 25 + 25)
        + (25 * 1 + 1)
    )
    assert n_params(net) == expected == 975_667
    out = net.eval()(torch.randn(7, *W_SHAPES["image"]))
    assert out.shape == (7,) and torch.isfinite(out).all()


def test_maxout_takes_the_largest_piece_per_unit():
    layer = MaxOut(2, 3, pieces=4)
    with torch.no_grad():
        layer.linear.weight.zero_()
        # unit j, piece p: bias 10 * j + p, except that unit 1's piece 0 follows the first input
        layer.linear.bias.copy_(torch.tensor([10.0 * j + p for j in range(3) for p in range(4)]))
        layer.linear.weight[1 * 4 + 0, 0] = 1.0
    out = layer(torch.tensor([[0.0, 0.0], [100.0, 0.0]]))
    assert torch.equal(out, torch.tensor([[3.0, 13.0, 23.0], [3.0, 110.0, 23.0]]))


def test_several_inputs_are_flattened_in_order():
    shapes = {"EMB2": (1, 7, 11), "TileBar0": (2, 3)}
    net = MaxOutNet(shapes, maxout=[4], pieces=2, dense=[]).eval()
    assert net.n_features == 77 + 6 and net.input_names == ["EMB2", "TileBar0"]
    emb2, tile = torch.randn(3, 1, 7, 11), torch.randn(3, 2, 3)
    flat = torch.cat([emb2.flatten(1), tile.flatten(1)], dim=1)
    with torch.no_grad():
        assert torch.allclose(net(emb2, tile), net.head(net.maxout(flat)).squeeze(-1))
    with pytest.raises(ConfigError, match=r"expects 2 inputs \['EMB2', 'TileBar0'\], but got 1"):
        net(emb2)


def test_dropout_and_init_options():
    net = MaxOutNet(W_SHAPES, dense=[64, 25], dropout=0.3)
    assert [m.p for m in net.head if isinstance(m, nn.Dropout)] == [0.3, 0.3]
    assert not any(isinstance(m, nn.Dropout) for m in MaxOutNet(W_SHAPES).modules())
    torch.manual_seed(0)
    first = MaxOutNet(W_SHAPES, init="he").maxout[0].linear
    assert first.weight.std().item() == pytest.approx((2.0 / 625) ** 0.5, rel=0.02) and torch.all(first.bias == 0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pieces": 1}, "pieces must be an integer >= 2"),
        ({"pieces": 2.5}, "pieces must be an integer >= 2"),
        ({"maxout": []}, "maxout must be a non-empty list"),
        ({"maxout": [256, -1]}, "maxout must be a list of positive sizes"),
        ({"dense": [0]}, "dense must be a list of positive sizes"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"activation": "swish"}, "activation must be one of"),
        ({"init": "orthogonal"}, "init must be one of"),
    ],
)
def test_bad_settings_raise_one_config_error_each(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        MaxOutNet(W_SHAPES, **kwargs)


def test_bad_input_shapes():
    with pytest.raises(ConfigError, match="input_shapes must name at least one layer"):
        MaxOutNet({})
    with pytest.raises(ConfigError, match=r"input_shapes\['image'\] must have .* sizes >= 1, but got \(1, 0, 25\)"):
        MaxOutNet({"image": (1, 0, 25)})
