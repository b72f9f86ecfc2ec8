"""The MaxOut W tagger of de Oliveira et al. (arXiv:1511.05190): a dense net on the flattened jet image.

Each MaxOut unit takes the largest of ``pieces`` linear functions of its inputs (Goodfellow et
al., arXiv:1302.4389), so a layer learns its own piecewise-linear activation. The published net
(deepjets ``models.get_maxout``) reads the 25 x 25 = 625 pixels of a jet image: MaxOut 256
(5 pieces) -> MaxOut 128 (5) -> dense 64 -> dense 25 (ReLU) -> output; the sizes live in
``conf/net/wtag_maxout.yaml`` and the input size comes from the data module. Several inputs are
flattened and concatenated in ``input_shapes`` order, so the forward convention is that of
every net here: positional tensors in, logits (B,) out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from calolab.errors import ConfigError
from lightning_modules.nets._blocks import (
    as_int,
    check_common,
    check_input_shapes,
    check_sizes,
    dense_head,
    init_weights,
)


class MaxOut(nn.Module):
    """A dense MaxOut layer: ``max_k (x W_k + b_k)`` over ``pieces`` linear maps, (B, n_in) -> (B, n_out)."""

    def __init__(self, n_in: int, n_out: int, pieces: int) -> None:
        super().__init__()
        self.n_out, self.pieces = n_out, pieces
        self.linear = nn.Linear(n_in, n_out * pieces)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x).unflatten(-1, (self.n_out, self.pieces)).amax(dim=-1)  # (B, n_out, pieces) -> (B, n_out)


class MaxOutNet(nn.Module):
    """Flattened inputs -> MaxOut layers -> dense head; one logit per event.

    Args:
        input_shapes: per-event shape of each input (any number of axes; each is flattened), in
            the order the inputs are passed to :meth:`forward`.
        maxout: widths of the successive MaxOut layers.
        pieces: linear pieces per MaxOut unit (the published net: 5).
        dense: widths of the hidden dense layers after the MaxOut layers.
        dropout: dropout rate after each hidden dense layer (the published net has none).
        activation: activation of the dense layers (the published net: ``relu``); see
            :data:`lightning_modules.nets._blocks.ACTIVATIONS`.
        init: ``he`` (Kaiming normal; the published first layer is He-uniform), ``lecun``,
            ``xavier`` (Keras' default, the published later layers) or ``torch``.
    """

    def __init__(
        self,
        input_shapes: Mapping[str, Sequence[int]],
        *,
        maxout: Sequence[int] = (256, 128),
        pieces: int = 5,
        dense: Sequence[int] = (64, 25),
        dropout: float = 0.0,
        activation: str = "relu",
        init: str = "he",
    ) -> None:
        super().__init__()
        shapes = check_input_shapes(input_shapes, ndims=(1, 2, 3))
        maxout = check_sizes("maxout", maxout, allow_empty=False)
        dense = check_sizes("dense", dense, allow_empty=True)
        n_pieces = as_int(pieces)
        if n_pieces is None or n_pieces < 2:
            raise ConfigError(f"pieces must be an integer >= 2 (one piece is a plain linear layer), but got {pieces!r}")
        check_common(dropout=dropout, activation=activation, init=init)

        self.input_names: list[str] = list(shapes)
        self.input_shapes: dict[str, tuple[int, ...]] = shapes
        self.n_features = sum(math.prod(shape) for shape in shapes.values())
        layers: list[nn.Module] = []
        n_in = self.n_features
        for width in maxout:
            layers.append(MaxOut(n_in, width, n_pieces))
            n_in = width
        self.maxout = nn.Sequential(*layers)
        self.head = dense_head(n_in, dense, activation=activation, dropout=dropout)
        init_weights(self, init)

    def forward(self, *inputs: Tensor) -> Tensor:
        """Score a batch: one tensor per input, in ``input_names`` order; returns logits ``(B,)``."""
        if len(inputs) != len(self.input_names):
            raise ConfigError(
                f"MaxOutNet expects {len(self.input_names)} inputs {self.input_names}, but got {len(inputs)}"
            )
        x = torch.cat([t.flatten(1) for t in inputs], dim=1)  # (B, sum of C * eta * phi)
        return self.head(self.maxout(x)).squeeze(-1)  # (B,)
