"""The two nets of the location-aware GAN (LAGAN, arXiv:1701.05927): generator and discriminator.

As published (hep-lbdl/adversarial-jets ``models/lagan/``; ``../shared/REFERENCE.md``), with every
size a constructor argument (``conf/net/lagan_*.yaml``):

- :class:`LaganGenerator`: the latent vector times a learnt embedding of the class (class-conditional
  sampling), a dense layer onto a coarse grid, nearest-neighbour up-sampling, a 5x5 convolution,
  then locally-connected layers (5x5, 3x3, 'same' padding) and a final 'valid' locally-connected
  layer onto the image, with a ReLU output so that images are sparse like jet images (most
  pixels exactly zero). LeakyReLU and batch-norm between layers.
- :class:`LaganDiscriminator`: a 5x5 convolution and 'valid' locally-connected layers with
  LeakyReLU, batch-norm and dropout, then minibatch discrimination (:class:`MinibatchDiscrimination`,
  which lets it see that a batch of generated images lacks the variety of real ones) and two
  heads: real/fake (one logit) and the auxiliary class (one logit per class).
- :class:`LaganNets` holds both, built from the data's input shape (the image), so that
  ``conf/net/`` builds one module for the training command, as for any other task.

Nets know nothing of losses or optimisers (:class:`lightning_modules.lagan.LAGAN` trains them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from calolab.errors import ConfigError
from lightning_modules.nets.locally_connected import LocallyConnected2d

#: the data module's one image input
IMAGE = "image"


def _positive(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be an integer >= 1, but got {value!r}")
    return value


def _same(kernel: int, what: str) -> int:
    if _positive(kernel, what) % 2 == 0:
        raise ConfigError(f"{what} must be odd for 'same' padding, but got {kernel}")
    return kernel // 2


class MinibatchDiscrimination(nn.Module):
    """Minibatch discrimination (Salimans et al., arXiv:1606.03498): per event, how close it is to the others.

    ``M = x T`` is reshaped to ``(B, kernels, dim)``; feature ``k`` of event ``i`` is
    ``sum_{j != i} exp(-||M_ik - M_jk||_1)``. Returns ``x`` with the ``kernels`` features appended.
    """

    def __init__(self, in_features: int, kernels: int = 20, dim: int = 10) -> None:
        super().__init__()
        self.kernels, self.dim = _positive(kernels, "minibatch kernels"), _positive(dim, "minibatch dim")
        self.T = nn.Parameter(torch.randn(_positive(in_features, "in_features"), kernels * dim) * 0.1)

    def forward(self, x: Tensor) -> Tensor:
        m = (x @ self.T).reshape(-1, self.kernels, self.dim)  # (B, K, D)
        distance = (m.unsqueeze(0) - m.unsqueeze(1)).abs().sum(-1)  # (B, B, K)
        closeness = torch.exp(-distance).sum(1) - 1.0  # (B, K); exp(0) = 1 of the event itself removed
        return torch.cat([x, closeness], dim=1)


class LaganGenerator(nn.Module):
    """Class-conditional generator ``(latent (B, L), label (B,)) -> image (B, C, H, W)``, ReLU output.

    Args:
        image_shape: ``(C, H, W)`` of the images (the data's).
        latent_dim: size of the latent vector.
        n_classes: classes of the conditional label (0 .. n_classes - 1; given as floats or ints).
        dense_channels: channels of the coarse grid the dense layer fills.
        upsample: nearest-neighbour up-sampling factor of the coarse grid.
        conv_channels, conv_kernel: the convolution after up-sampling ('same').
        lc_channels, lc_kernels: the 'same' locally-connected layers, in order.
        final_kernel: the last, 'valid', locally-connected layer onto the image: the grid before it
            is ``H + final_kernel - 1``, which ``upsample`` must divide.
        negative_slope: of the LeakyReLUs.
        batchnorm: batch-norm after each hidden layer.
    """

    input_names = ("latent", "label")

    def __init__(
        self,
        image_shape: Sequence[int],
        latent_dim: int = 200,
        n_classes: int = 2,
        dense_channels: int = 128,
        upsample: int = 2,
        conv_channels: int = 64,
        conv_kernel: int = 5,
        lc_channels: Sequence[int] = (6, 6),
        lc_kernels: Sequence[int] = (5, 3),
        final_kernel: int = 2,
        negative_slope: float = 0.2,
        batchnorm: bool = True,
    ) -> None:
        super().__init__()
        c, h, w = (int(v) for v in image_shape)
        self.image_shape = (c, h, w)
        self.latent_dim = _positive(latent_dim, "latent_dim")
        self.n_classes = _positive(n_classes, "n_classes")
        if len(lc_channels) != len(lc_kernels):
            raise ConfigError(
                f"lc_channels and lc_kernels must have one entry per layer, but got {list(lc_channels)} and {list(lc_kernels)}"
            )
        grid = (h + _positive(final_kernel, "final_kernel") - 1, w + final_kernel - 1)
        if grid[0] % _positive(upsample, "upsample") or grid[1] % upsample:
            raise ConfigError(
                f"upsample={upsample} must divide the grid {grid} before the final {final_kernel}x{final_kernel} "
                f"layer of a {h}x{w} image"
            )
        self.coarse = (dense_channels, grid[0] // upsample, grid[1] // upsample)
        self.embedding = nn.Embedding(n_classes, latent_dim)
        self.dense = nn.Linear(latent_dim, dense_channels * self.coarse[1] * self.coarse[2])

        def block(layer: nn.Module, channels: int) -> list[nn.Module]:
            return [layer, nn.LeakyReLU(negative_slope)] + ([nn.BatchNorm2d(channels)] if batchnorm else [])

        layers: list[nn.Module] = [nn.LeakyReLU(negative_slope)] + (
            [nn.BatchNorm2d(dense_channels)] if batchnorm else []
        )
        layers += [nn.Upsample(scale_factor=upsample, mode="nearest")]
        pad = _same(conv_kernel, "conv_kernel")
        layers += block(nn.Conv2d(dense_channels, conv_channels, conv_kernel, padding=pad), conv_channels)
        channels = conv_channels
        for out, kernel in zip(lc_channels, lc_kernels):
            lc = LocallyConnected2d(channels, out, grid, kernel, padding=_same(kernel, "lc_kernels"))
            layers += block(lc, out)
            channels = out
        layers += [LocallyConnected2d(channels, c, grid, final_kernel, bias=False), nn.ReLU()]
        self.body = nn.Sequential(*layers)

    def forward(self, latent: Tensor, label: Tensor) -> Tensor:
        h = latent * self.embedding(label.long())  # (B, L): the class modulates the latent vector
        x = self.dense(h).reshape(-1, *self.coarse)  # (B, C0, h0, w0)
        return self.body(x)  # (B, C, H, W), >= 0


class LaganDiscriminator(nn.Module):
    """Discriminator ``image (B, C, H, W) -> (real/fake logit (B,), class logits (B, n_classes))``.

    Args:
        image_shape: ``(C, H, W)`` of the images.
        n_classes: classes of the auxiliary head.
        conv_channels, conv_kernel: the first convolution ('same').
        lc_channels, lc_kernels: the 'valid' locally-connected layers, in order.
        dropout: after each hidden layer.
        negative_slope: of the LeakyReLUs.
        batchnorm: batch-norm after each locally-connected layer.
        minibatch_kernels, minibatch_dim: minibatch discrimination (0 kernels: none).
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        n_classes: int = 2,
        conv_channels: int = 32,
        conv_kernel: int = 5,
        lc_channels: Sequence[int] = (8, 8, 8),
        lc_kernels: Sequence[int] = (5, 5, 5),
        dropout: float = 0.2,
        negative_slope: float = 0.2,
        batchnorm: bool = True,
        minibatch_kernels: int = 20,
        minibatch_dim: int = 10,
    ) -> None:
        super().__init__()
        c, h, w = (int(v) for v in image_shape)
        self.n_classes = _positive(n_classes, "n_classes")
        if len(lc_channels) != len(lc_kernels):
            raise ConfigError(
                f"lc_channels and lc_kernels must have one entry per layer, but got {list(lc_channels)} and {list(lc_kernels)}"
            )
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), but got {dropout!r}")
        layers: list[nn.Module] = [
            nn.Conv2d(c, conv_channels, conv_kernel, padding=_same(conv_kernel, "conv_kernel")),
            nn.LeakyReLU(negative_slope),
            nn.Dropout(dropout),
        ]
        channels, size = conv_channels, (h, w)
        for out, kernel in zip(lc_channels, lc_kernels):
            lc = LocallyConnected2d(channels, out, size, kernel)
            layers += [lc, nn.LeakyReLU(negative_slope)]
            layers += ([nn.BatchNorm2d(out)] if batchnorm else []) + [nn.Dropout(dropout)]
            channels, size = out, lc.output_size
        self.features = nn.Sequential(*layers, nn.Flatten())
        n_features = channels * size[0] * size[1]
        self.minibatch = (
            MinibatchDiscrimination(n_features, minibatch_kernels, minibatch_dim)
            if minibatch_kernels
            else nn.Identity()
        )
        n_features += minibatch_kernels if minibatch_kernels else 0
        self.real_fake = nn.Linear(n_features, 1)
        self.aux = nn.Linear(n_features, n_classes)

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        x = self.minibatch(self.features(image))  # (B, F)
        return self.real_fake(x).squeeze(-1), self.aux(x)


class LaganNets(nn.Module):
    """Generator and discriminator of one LAGAN, built for the data's image.

    Args:
        input_shapes: the data module's input name -> per-event shape; it must have one input,
            the image ``(C, H, W)`` (passed by the training command).
        generator, discriminator: keyword arguments of :class:`LaganGenerator` and
            :class:`LaganDiscriminator` (all but ``image_shape``).
        n_classes: classes of the conditional label and of the auxiliary head.
    """

    def __init__(
        self,
        input_shapes: Mapping[str, Sequence[int]],
        generator: Mapping,
        discriminator: Mapping,
        n_classes: int = 2,
    ) -> None:
        super().__init__()
        if len(input_shapes) != 1:
            raise ConfigError(f"LAGAN generates one image, but the data has inputs {list(input_shapes)}")
        ((self.image_name, shape),) = input_shapes.items()
        if len(shape) != 3:
            raise ConfigError(f"LAGAN images must be (C, H, W), but input {self.image_name!r} has shape {list(shape)}")
        self.image_shape = tuple(int(v) for v in shape)
        self.generator = LaganGenerator(self.image_shape, n_classes=n_classes, **dict(generator))
        self.discriminator = LaganDiscriminator(self.image_shape, n_classes=n_classes, **dict(discriminator))
