"""The photon-identification CNN of the seed slides: one convolutional branch per calorimeter layer.

The layers of the EM barrel have different granularities (the strips are 56 x 3 cells over the
window where the middle layer has 7 x 11, the Tile layer 2 x 3), so they are not stacked as
channels of one image: each layer gets its own small convolutional branch, the branches'
outputs are flattened and concatenated, and a dense head turns them into one logit per event.
Defaults follow the seeds (selu, He initialisation, 8% dropout, ~1.4M parameters for the four
photon layers); every size comes from ``conf/net/photon_cnn.yaml``, and the input shapes come
from the data module, so they are never typed twice. The net knows nothing of losses or
optimisers; :class:`lightning_modules.classifier.BinaryClassifier` trains it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

import torch
from torch import Tensor, nn

from calolab.errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "selu": nn.SELU,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
}
INITS = ("he", "lecun", "xavier", "torch")

_T = TypeVar("_T")


def _per_layer(value: _T | Mapping[str, _T], names: Sequence[str], what: str) -> dict[str, _T]:
    """Expand a setting given once for all layers, or as ``{layer: value}``, to one per layer."""
    if not isinstance(value, Mapping):
        return dict.fromkeys(names, value)
    missing, unknown = set(names) - set(value), set(value) - set(names)
    if missing or unknown:
        raise ConfigError(
            f"{what} given per layer must name exactly the input layers {list(names)}, but got {sorted(value)}"
        )
    return {name: value[name] for name in names}


def _pool_kernel(height: int, width: int) -> tuple[int, int]:
    """Pool by 2 along a dimension only where it has at least 2 cells (a 1-cell axis stays)."""
    return (2 if height >= 2 else 1, 2 if width >= 2 else 1)


class PhotonCNN(nn.Module):
    """Per-layer convolutional branches, concatenated into a dense head; one logit per event.

    Args:
        input_shapes: per-event shape of each layer image, ``(C, eta, phi)`` or ``(eta, phi)``
            (one channel implied), in the order the inputs are passed to :meth:`forward`.
        channels: output channels of the successive convolutions of every branch.
        kernel_size: odd kernel size of the convolutions (padded so that a convolution never
            shrinks an image), for all layers or as ``{layer: size}``.
        pool: max-pool by 2 after each convolution (only along dimensions of at least 2 cells),
            for all layers or as ``{layer: bool}``.
        dense: widths of the hidden dense layers of the head.
        dropout: dropout rate after each hidden dense layer (alpha-dropout with selu, which keeps
            the self-normalising mean and variance).
        activation: one of ``selu``, ``relu``, ``elu``, ``gelu``, ``leaky_relu``.
        init: weight initialisation of convolutions and dense layers: ``he`` (Kaiming normal,
            fan-in, as the seeds), ``lecun`` (the self-normalising choice for selu), ``xavier``,
            or ``torch`` (PyTorch's defaults). Biases start at zero except for ``torch``.
    """

    def __init__(
        self,
        input_shapes: Mapping[str, Sequence[int]],
        *,
        channels: Sequence[int] = (32, 64),
        kernel_size: int | Mapping[str, int] = 3,
        pool: bool | Mapping[str, bool] = True,
        dense: Sequence[int] = (1024, 128),
        dropout: float = 0.08,
        activation: str = "selu",
        init: str = "he",
    ) -> None:
        super().__init__()
        if not input_shapes:
            raise ConfigError("input_shapes must name at least one layer, but got none")
        shapes = {str(name): tuple(int(n) for n in shape) for name, shape in input_shapes.items()}
        for name, shape in shapes.items():
            if len(shape) not in (2, 3) or min(shape) < 1:
                raise ConfigError(
                    f"input_shapes[{name!r}] must be (C, eta, phi) or (eta, phi) of sizes >= 1, but got {shape}"
                )
        channels, dense = [int(c) for c in channels], [int(d) for d in dense]
        if not channels or min(channels) < 1:
            raise ConfigError(f"channels must be a non-empty list of positive sizes, but got {channels}")
        if dense and min(dense) < 1:
            raise ConfigError(f"dense sizes must be positive, but got {dense}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), but got dropout={dropout}")
        if activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {sorted(ACTIVATIONS)}, but got {activation!r}")
        if init not in INITS:
            raise ConfigError(f"init must be one of {list(INITS)}, but got {init!r}")
        names = list(shapes)
        kernels = _per_layer(kernel_size, names, "kernel_size")
        pools = _per_layer(pool, names, "pool")
        for name, k in kernels.items():
            if int(k) < 1 or int(k) % 2 == 0:
                raise ConfigError(
                    f"kernel_size must be odd and positive (padded to keep sizes), but got {k} for {name!r}"
                )

        self.input_names: list[str] = names
        self.input_shapes: dict[str, tuple[int, ...]] = shapes
        self._add_channel = tuple(len(shapes[name]) == 2 for name in names)
        act = ACTIVATIONS[activation]

        self.branches = nn.ModuleList()
        n_features = 0
        for name in names:
            c_in, height, width = (1, *shapes[name]) if len(shapes[name]) == 2 else shapes[name]
            k = int(kernels[name])
            layers: list[nn.Module] = []
            for c_out in channels:
                layers += [nn.Conv2d(c_in, c_out, k, padding=k // 2), act()]  # (B, c_out, eta, phi)
                if bool(pools[name]) and (height > 1 or width > 1):
                    kernel = _pool_kernel(height, width)
                    layers.append(nn.MaxPool2d(kernel))
                    height, width = height // kernel[0], width // kernel[1]
                c_in = c_out
            layers.append(nn.Flatten(1))  # (B, C * eta' * phi')
            self.branches.append(nn.Sequential(*layers))
            n_features += c_in * height * width

        drop = nn.AlphaDropout if activation == "selu" else nn.Dropout
        head: list[nn.Module] = []
        width_in = n_features
        for width_out in dense:
            head += [nn.Linear(width_in, width_out), act()]
            if dropout > 0:
                head.append(drop(dropout))
            width_in = width_out
        head.append(nn.Linear(width_in, 1))
        self.head = nn.Sequential(*head)
        self.n_features = n_features
        self._init_weights(init)

    def _init_weights(self, init: str) -> None:
        if init == "torch":
            return
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                if init == "he":
                    nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                elif init == "lecun":
                    nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="linear")
                else:
                    nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, *inputs: Tensor) -> Tensor:
        """Score a batch: one tensor per layer, in ``input_names`` order; returns logits ``(B,)``."""
        if len(inputs) != len(self.branches):
            raise ConfigError(
                f"PhotonCNN expects {len(self.branches)} inputs {self.input_names}, but got {len(inputs)}"
            )
        features = [
            branch(x.unsqueeze(1) if add else x)  # (B, F_layer)
            for branch, x, add in zip(self.branches, inputs, self._add_channel)
        ]
        return self.head(torch.cat(features, dim=1)).squeeze(-1)  # (B, F) -> (B,)
