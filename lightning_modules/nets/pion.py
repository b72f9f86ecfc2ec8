"""The pi0 / pi+- and cluster-calibration nets: layer images of a topo-cluster at the EM scale -> one number.

The pion studies (Cukierman et al.; caloml-atlas) feed cluster images whose cells are in MeV at
the EM scale and whose sum is the cluster's EM-scale energy. :class:`PionNet` therefore reads
the raw images (``data.normalisation: none``) and normalises them itself: every image is divided
by the cluster energy E (the sum of all its inputs' cells, so every input reaches the graph and
the ONNX export) and ``log(E / 1 GeV)`` joins the features, so that the net sees shapes and the
energy scale apart. Which layers get an image branch, and what kind, are options, giving the
study's networks as configs:

- ``conf/net/pion_dense.yaml``: a dense net on the flattened EMB2 image and the cluster energy;
- ``conf/net/pion_cnn.yaml``: a CNN on EMB2 (and the cluster energy);
- ``conf/net/pion_all_layers.yaml``: one convolutional branch per layer (six, as the photon
  :class:`~lightning_modules.nets.layer_cnn.LayerCNN`), concatenated into a dense head.

The output is one number per event: a logit for the classifier, the log of the calibration
factor for :class:`~lightning_modules.regression.EnergyRegressor`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from calolab.errors import ConfigError, suggest
from lightning_modules.nets._blocks import (
    ACTIVATIONS,
    check_common,
    check_input_shapes,
    check_sizes,
    dense_head,
    init_weights,
)

BRANCHES = ("dense", "cnn")
#: Cluster energies are clamped to at least this (MeV) before dividing and taking the log.
MIN_CLUSTER_MEV = 1.0


def cluster_energy(inputs: Sequence[Tensor]) -> Tensor:
    """(B,) the EM-scale cluster energy: the sum of every cell of every input image."""
    return torch.stack([x.reshape(x.shape[0], -1).sum(dim=1) for x in inputs], dim=0).sum(dim=0)


class PionNet(nn.Module):
    """Per-layer branches on cluster images normalised to the cluster energy, plus log(E) (see module docstring).

    Args:
        input_shapes: per-event shape of every input, ``(C, eta, phi)`` or ``(eta, phi)``, in forward
            order (the data module's; all of the cluster's layers, whose sum is its energy).
        layers: the inputs that get an image branch; None: all.
        branch: ``dense`` (the flattened image) or ``cnn`` (convolutions).
        channels: output channels of each convolution of a ``cnn`` branch (3x3, same padding, each
            followed by the activation and a 2x2 max-pool along axes of >= 2 cells).
        dense: widths of the hidden layers of the head.
        dropout: dropout after each hidden layer of the head.
        activation: one of ``ACTIVATIONS``.
        init: weight initialisation (``he``, ``lecun``, ``xavier``, ``torch``).
        energy_feature: add log(E / 1 GeV) to the features.
    """

    def __init__(
        self,
        input_shapes: Mapping[str, Sequence[int]],
        layers: Sequence[str] | None = None,
        branch: str = "cnn",
        channels: Sequence[int] = (16, 32),
        dense: Sequence[int] = (128, 64),
        dropout: float = 0.1,
        activation: str = "relu",
        init: str = "he",
        energy_feature: bool = True,
    ) -> None:
        super().__init__()
        shapes = check_input_shapes(input_shapes, ndims=(2, 3))
        names = list(shapes)
        used = names if layers is None else [str(x) for x in layers]
        for name in used:
            if name not in shapes:
                raise ConfigError(
                    f"net.layers names {name!r}, which is not an input{suggest(name, names)}; inputs: {names}"
                )
        if not used:
            raise ConfigError("net.layers must name at least one input, but got []")
        if branch not in BRANCHES:
            raise ConfigError(f"net.branch must be one of {list(BRANCHES)}, but got {branch!r}")
        channels = check_sizes("channels", channels, allow_empty=branch == "dense")
        dense = check_sizes("dense", dense, allow_empty=True)
        check_common(dropout=dropout, activation=activation, init=init)
        if not isinstance(energy_feature, bool):
            raise ConfigError(f"energy_feature must be true or false, but got {energy_feature!r}")
        self.input_names: list[str] = names
        self._used = [names.index(name) for name in used]
        self._add_channel = [len(shapes[name]) == 2 for name in names]
        self.energy_feature = energy_feature
        act = ACTIVATIONS[activation]
        self.branches = nn.ModuleList()
        n_features = int(energy_feature)
        for name in used:
            shape = shapes[name] if len(shapes[name]) == 3 else (1, *shapes[name])
            if branch == "dense":
                self.branches.append(nn.Flatten())
                n_features += int(torch.tensor(shape).prod())
                continue
            mods: list[nn.Module] = []
            c, h, w = shape
            for out in channels:
                kernel = (3 if h > 1 else 1, 3 if w > 1 else 1)
                mods += [nn.Conv2d(c, out, kernel, padding=(kernel[0] // 2, kernel[1] // 2)), act()]
                pool = (2 if h >= 2 else 1, 2 if w >= 2 else 1)
                if pool != (1, 1):
                    mods.append(nn.MaxPool2d(pool))
                c, h, w = out, h // pool[0], w // pool[1]
            mods.append(nn.Flatten())
            self.branches.append(nn.Sequential(*mods))
            n_features += c * h * w
        self.head = dense_head(n_features, dense, activation=activation, dropout=dropout)
        init_weights(self, init)
        self.layers = used
        self.branch = branch
        self._n_params = sum(p.numel() for p in self.parameters())

    def forward(self, *inputs: Tensor) -> Tensor:
        """One tensor per input in ``input_names`` order (MeV at the EM scale) -> ``(B,)``."""
        if len(inputs) != len(self.input_names):
            raise ConfigError(
                f"{type(self).__name__} expects {len(self.input_names)} inputs {self.input_names}, but got {len(inputs)}"
            )
        xs = [x.unsqueeze(1) if add else x for x, add in zip(inputs, self._add_channel, strict=True)]
        energy = cluster_energy(xs).clamp_min(MIN_CLUSTER_MEV)  # (B,)
        scale = (1.0 / energy)[:, None, None, None]
        features = [b(xs[i] * scale) for b, i in zip(self.branches, self._used, strict=True)]  # (B, F_i)
        if self.energy_feature:
            features.append(torch.log(energy / 1000.0)[:, None])  # (B, 1)
        return self.head(torch.cat(features, dim=1)).squeeze(1)  # (B,)
