"""A 2-D locally-connected layer: a convolution whose filter is different at every output position.

Jet images are not translation invariant: after centring, rotating and flipping, a pixel's
position means something (the leading subjet sits in the middle, the subleading one straight
below). The location-aware GAN (de Oliveira, Paganini, Nachman, arXiv:1701.05927) therefore uses
locally-connected layers, Keras' ``LocallyConnected2D``: the receptive field of a convolution,
but unshared weights per output position.

:class:`LocallyConnected2d` gathers every receptive field with ``Tensor.unfold`` (a strided view,
no copy until the product) and applies each position's own ``(out, in * k * k)`` matrix in one
``einsum``: a batched matrix product, fast on CPU and GPU, with no Python loop over positions,
and exported by ``torch.onnx`` as plain slicing and a MatMul.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from calolab.errors import ConfigError


def _pair(value: int | Sequence[int], what: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in pair):
        raise ConfigError(f"{what} must be an integer or a pair of integers, but got {value!r}")
    return int(pair[0]), int(pair[1])


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length along one axis (as a convolution's)."""
    return (size + 2 * padding - kernel) // stride + 1


class LocallyConnected2d(nn.Module):
    """Locally-connected 2-D layer (unshared weights): ``(B, C_in, H, W) -> (B, C_out, H_out, W_out)``.

    Args:
        in_channels, out_channels: channels in and out.
        input_size: ``(H, W)`` of the input (the weights depend on it).
        kernel_size, stride, padding: as :class:`torch.nn.Conv2d` (zero padding).
        bias: one bias per output channel *and* position.

    The weight has shape ``(H_out * W_out, C_out, C_in * kh * kw)``: for each output position its
    own matrix, applied to the receptive field flattened in ``(channel, row, column)`` order.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        input_size: int | Sequence[int],
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, but got {value!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.input_size = _pair(input_size, "input_size")
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.output_size = tuple(
            output_size(n, k, s, p) for n, k, s, p in zip(self.input_size, self.kernel_size, self.stride, self.padding)
        )
        if min(self.output_size) < 1 or min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ConfigError(
                f"a {self.kernel_size} kernel with stride {self.stride} and padding {self.padding} does not fit an "
                f"input of {self.input_size}"
            )
        positions = self.output_size[0] * self.output_size[1]
        fan_in = in_channels * self.kernel_size[0] * self.kernel_size[1]
        self.weight = nn.Parameter(torch.empty(positions, out_channels, fan_in))
        self.bias = nn.Parameter(torch.empty(out_channels, *self.output_size)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Conv2d's default (Kaiming uniform with a = sqrt(5)) per position: the same scale as a convolution
        bound = 1.0 / math.sqrt(self.weight.shape[-1])
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, input_size={self.input_size}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}"
        )

    def forward(self, x: Tensor) -> Tensor:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        if x.shape[1:] != (self.in_channels, *self.input_size):
            raise ValueError(
                f"expected input (B, {self.in_channels}, {self.input_size[0]}, {self.input_size[1]}), got {tuple(x.shape)}"
            )
        if ph or pw:
            x = F.pad(x, (pw, pw, ph, ph))
        patches = x.unfold(2, kh, sh).unfold(3, kw, sw)  # (B, C, H_out, W_out, kh, kw)
        b = x.shape[0]
        ho, wo = self.output_size
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(b, ho * wo, -1)  # (B, P, C*kh*kw)
        out = torch.einsum("bpk,pok->bop", patches, self.weight).reshape(b, self.out_channels, ho, wo)
        return out if self.bias is None else out + self.bias
