"""The per-layer CNN: one convolutional branch per input image, concatenated into a dense head.

The layers of the EM barrel have different granularities (the strips are 56 x 3 cells over the
window where the middle layer has 7 x 11, the Tile layer 2 x 3), so they are not stacked as
channels of one image: each input gets its own convolutional branch, the branches' outputs are
flattened and concatenated, and a dense head turns them into one logit per event. With a single
input (a jet image, its channels pT and counts) the same net is a plain image CNN, so the
published jet taggers are configs of it: ``conf/net/qg_cnn.yaml`` (Komiske et al.,
arXiv:1612.01551) and ``conf/net/wtag_cnn.yaml`` (de Oliveira et al., arXiv:1511.05190), beside the
photon CNN of the seed slides, ``conf/net/photon_cnn.yaml`` (the defaults here: selu, He
initialisation, 8% dropout, ~1.4M parameters for the four photon layers). The input shapes come
from the data module, so no size is typed twice. The net knows nothing of losses or optimisers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from calolab.errors import ConfigError
from lightning_modules.nets._blocks import (
    ACTIVATIONS,
    as_int,
    check_common,
    check_input_shapes,
    check_sizes,
    dense_head,
    init_weights,
)

PADDINGS = ("same", "valid")

_T = TypeVar("_T")


def _per_conv(
    value: Any, names: Sequence[str], n_conv: int, what: str, parse: Callable[[Any, str], _T]
) -> dict[str, list[_T]]:
    """Expand a setting to one value per layer and convolution.

    It may be given once for everything, as a list with one entry per convolution (the same for
    every layer), or as ``{layer: once or list}`` naming exactly the input layers.
    """
    if isinstance(value, Mapping):
        missing, unknown = set(names) - set(value), set(value) - set(names)
        if missing or unknown:
            raise ConfigError(
                f"{what} given per layer must name exactly the input layers {list(names)}, but got {sorted(value)}"
            )
        per_layer = {name: value[name] for name in names}
    else:
        per_layer = dict.fromkeys(names, value)
    out = {}
    for name, v in per_layer.items():
        if isinstance(v, Sequence) and not isinstance(v, str | bytes):
            if len(v) != n_conv:
                raise ConfigError(
                    f"{what} given per convolution must have one entry per entry of channels ({n_conv}), "
                    f"but got {list(v)} for {name!r}"
                )
            items = list(v)
        else:
            items = [v] * n_conv
        out[name] = [parse(item, name) for item in items]
    return out


def _kernel(value: Any, layer: str) -> int:
    k = as_int(value)
    if k is None or k < 1:
        raise ConfigError(f"kernel_size must be a positive integer, but got {value!r} for {layer!r}")
    return k


def _pool(value: Any, layer: str) -> int:
    """``true`` -> 2 (the seeds' 2 x 2 pooling), ``false`` -> 1 (none), an integer n >= 1 -> n x n."""
    if isinstance(value, bool):
        return 2 if value else 1
    n = as_int(value)
    if n is None or n < 1:
        raise ConfigError(f"pool must be true, false or a pool size >= 1, but got {value!r} for {layer!r}")
    return n


def _same_padding(k: int) -> nn.Module | None:
    """Zero-padding that keeps the size under an even kernel: the extra cell goes after (bottom, right).

    That is where TensorFlow/Keras and ONNX ``SAME_UPPER`` put it. Odd kernels pad in the
    convolution itself (``k // 2`` each side), so they need no module.
    """
    if k % 2:
        return None
    before = (k - 1) // 2
    after = k - 1 - before
    return nn.ZeroPad2d((before, after, before, after))  # (left, right, top, bottom)


class LayerCNN(nn.Module):
    """Per-layer convolutional branches, concatenated into a dense head; one logit per event.

    Each branch is ``[dropout] -> conv -> activation -> [max-pool]`` per entry of ``channels``,
    then flattened.

    Args:
        input_shapes: per-event shape of each input image, ``(C, eta, phi)`` or ``(eta, phi)``
            (one channel implied), in the order the inputs are passed to :meth:`forward`.
        channels: output channels of the successive convolutions of every branch.
        kernel_size: square kernel size of the convolutions: once for all, a list with one entry
            per convolution (``[11, 3, 3]``), or ``{layer: size or list}``. Even sizes are fine.
        padding: ``same`` zero-pads so that a convolution never shrinks an image (odd kernels
            symmetrically, even ones with the extra cell after, as Keras); ``valid`` does not pad
            (Keras' default: a k x k kernel takes k - 1 cells off each axis), and an image too
            small for its kernels is a ConfigError.
        pool: max-pooling after each convolution: ``true`` (2 x 2), ``false``, or a size n
            (n x n); once for all, per convolution, or per layer like ``kernel_size``. Along an axis
            shorter than n the pool covers the whole axis, and a 1-cell axis is never pooled, so
            no image shrinks below one cell.
        conv_dropout: dropout rate before each convolution (de Oliveira's W tagger: 0.2); plain
            dropout whatever the activation; 0 adds no module.
        dense: widths of the hidden dense layers of the head.
        dropout: dropout rate after each hidden dense layer (alpha-dropout with selu, which keeps
            the self-normalising mean and variance).
        activation: one of ``selu``, ``relu``, ``elu``, ``gelu``, ``leaky_relu``.
        init: weight initialisation of convolutions and dense layers: ``he`` (Kaiming normal,
            fan-in, as the seeds), ``lecun`` (the self-normalising choice for selu), ``xavier``
            (Glorot uniform, Keras' default), or ``torch`` (PyTorch's defaults). Biases start at
            zero except for ``torch``.
    """

    def __init__(
        self,
        input_shapes: Mapping[str, Sequence[int]],
        *,
        channels: Sequence[int] = (32, 64),
        kernel_size: int | Sequence[int] | Mapping[str, int | Sequence[int]] = 3,
        padding: str = "same",
        pool: bool | int | Sequence[bool | int] | Mapping[str, bool | int | Sequence[bool | int]] = True,
        conv_dropout: float = 0.0,
        dense: Sequence[int] = (1024, 128),
        dropout: float = 0.08,
        activation: str = "selu",
        init: str = "he",
    ) -> None:
        super().__init__()
        shapes = check_input_shapes(input_shapes, ndims=(2, 3))
        channels = check_sizes("channels", channels, allow_empty=False)
        dense = check_sizes("dense", dense, allow_empty=True)
        check_common(dropout=dropout, activation=activation, init=init)
        if padding not in PADDINGS:
            raise ConfigError(f"padding must be one of {list(PADDINGS)}, but got {padding!r}")
        if not 0.0 <= conv_dropout < 1.0:
            raise ConfigError(f"conv_dropout must be in [0, 1), but got conv_dropout={conv_dropout}")
        names = list(shapes)
        kernels = _per_conv(kernel_size, names, len(channels), "kernel_size", _kernel)
        pools = _per_conv(pool, names, len(channels), "pool", _pool)

        self.input_names: list[str] = names
        self.input_shapes: dict[str, tuple[int, ...]] = shapes
        self._add_channel = tuple(len(shapes[name]) == 2 for name in names)
        act = ACTIVATIONS[activation]

        self.branches = nn.ModuleList()
        n_features = 0
        for name in names:
            c_in, height, width = (1, *shapes[name]) if len(shapes[name]) == 2 else shapes[name]
            layers: list[nn.Module] = []
            for i, (c_out, k, p) in enumerate(zip(channels, kernels[name], pools[name])):
                if conv_dropout > 0:
                    layers.append(nn.Dropout(conv_dropout))
                if padding == "valid":
                    height, width = height - k + 1, width - k + 1
                    if height < 1 or width < 1:
                        raise ConfigError(
                            f"input {name!r}: convolution {i + 1} has a {k} x {k} kernel, but with padding='valid' "
                            f"its image is only {height + k - 1} x {width + k - 1} cells; use padding='same' or a "
                            "smaller kernel"
                        )
                    layers.append(nn.Conv2d(c_in, c_out, k))
                elif (pad := _same_padding(k)) is not None:
                    layers += [pad, nn.Conv2d(c_in, c_out, k)]
                else:
                    layers.append(nn.Conv2d(c_in, c_out, k, padding=k // 2))
                layers.append(act())  # (B, c_out, eta, phi)
                if p > 1 and (height > 1 or width > 1):
                    kernel = (min(p, height), min(p, width))
                    layers.append(nn.MaxPool2d(kernel))
                    height, width = height // kernel[0], width // kernel[1]
                c_in = c_out
            layers.append(nn.Flatten(1))  # (B, C * eta' * phi')
            self.branches.append(nn.Sequential(*layers))
            n_features += c_in * height * width

        self.head = dense_head(n_features, dense, activation=activation, dropout=dropout)
        self.n_features = n_features
        init_weights(self, init)

    def forward(self, *inputs: Tensor) -> Tensor:
        """Score a batch: one tensor per layer, in ``input_names`` order; returns logits ``(B,)``.

        Reads only ``branches``, ``head``, ``input_names`` and ``_add_channel``: the attributes
        that nets pickled before the rename (as ``PhotonCNN``) also carry.
        """
        if len(inputs) != len(self.branches):
            raise ConfigError(
                f"{type(self).__name__} expects {len(self.branches)} inputs {self.input_names}, but got {len(inputs)}"
            )
        features = [
            branch(x.unsqueeze(1) if add else x)  # (B, F_layer)
            for branch, x, add in zip(self.branches, inputs, self._add_channel)
        ]
        return self.head(torch.cat(features, dim=1)).squeeze(-1)  # (B, F) -> (B,)
