"""Pieces every net in :mod:`lightning_modules.nets` shares: input-shape checks, activations, the dense head, initialisation.

The nets differ in how they turn the per-layer images into features (convolutional branches,
a flattened MaxOut stack); they agree on how the inputs are described (the data module's
``input_shapes``, one entry per positional input), on the activation and initialisation names a
config may use, and on the head that turns features into one logit per event. Keeping those
here means a config option means the same thing in every net.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence

from torch import nn

from calolab.errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "selu": nn.SELU,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
}
INITS = ("he", "lecun", "xavier", "torch")


def check_input_shapes(
    input_shapes: Mapping[str, Sequence[int]], *, ndims: tuple[int, ...]
) -> dict[str, tuple[int, ...]]:
    """``input_shapes`` as ``{name: tuple of ints}``, or a ConfigError naming the bad entry.

    Args:
        input_shapes: per-event shape of each input, in forward order (the data module's).
        ndims: the numbers of axes a shape may have, e.g. ``(2, 3)`` for ``(eta, phi)`` or ``(C, eta, phi)``.
    """
    if not input_shapes:
        raise ConfigError("input_shapes must name at least one layer, but got none")
    shapes = {str(name): tuple(int(n) for n in shape) for name, shape in input_shapes.items()}
    for name, shape in shapes.items():
        if len(shape) not in ndims or min(shape) < 1:
            axes = " or ".join(f"{n} axes" for n in ndims)
            raise ConfigError(f"input_shapes[{name!r}] must have {axes} of sizes >= 1, but got {shape}")
    return shapes


def as_int(value: object) -> int | None:
    """``value`` as an int if it is an integer (Python or numpy, not a bool), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def check_sizes(name: str, sizes: Sequence[int], *, allow_empty: bool) -> list[int]:
    """Layer widths as a list of positive ints, or a ConfigError naming the option."""
    if isinstance(sizes, str | bytes) or not isinstance(sizes, Sequence):
        raise ConfigError(f"{name} must be a list of positive sizes, but got {sizes!r}")
    out = [as_int(size) for size in sizes]
    if any(size is None or size < 1 for size in out):
        raise ConfigError(f"{name} must be a list of positive sizes, but got {list(sizes)}")
    if not out and not allow_empty:
        raise ConfigError(f"{name} must be a non-empty list of positive sizes, but got {list(sizes)}")
    return out


def check_common(*, dropout: float, activation: str, init: str) -> None:
    """The options every net has, checked where they enter."""
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), but got dropout={dropout}")
    if activation not in ACTIVATIONS:
        raise ConfigError(f"activation must be one of {sorted(ACTIVATIONS)}, but got {activation!r}")
    if init not in INITS:
        raise ConfigError(f"init must be one of {list(INITS)}, but got {init!r}")


def dense_head(n_in: int, dense: Sequence[int], *, activation: str, dropout: float) -> nn.Sequential:
    """``[Linear, activation, dropout] x len(dense)`` then ``Linear(., 1)``: features (B, n_in) -> logits (B, 1).

    Dropout follows each hidden layer when ``dropout > 0``: alpha-dropout with selu (it keeps the
    self-normalising mean and variance), plain dropout otherwise.
    """
    act = ACTIVATIONS[activation]
    drop = nn.AlphaDropout if activation == "selu" else nn.Dropout
    layers: list[nn.Module] = []
    for width in dense:
        layers += [nn.Linear(n_in, width), act()]
        if dropout > 0:
            layers.append(drop(dropout))
        n_in = width
    layers.append(nn.Linear(n_in, 1))
    return nn.Sequential(*layers)


def init_weights(net: nn.Module, init: str) -> None:
    """Initialise every convolution and linear layer of ``net``; biases start at zero (except ``torch``).

    ``he``: Kaiming normal, fan-in (the photon seeds); ``lecun``: the self-normalising choice for
    selu; ``xavier``: Glorot uniform (Keras' default); ``torch``: PyTorch's own defaults, untouched.
    """
    if init == "torch":
        return
    for module in net.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            if init == "he":
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            elif init == "lecun":
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="linear")
            else:
                nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
