"""Pileup-denoising auto-encoders (PAED, Belfkir): pileup cell images -> pileup-free ones, per layer.

:class:`DenoisingAutoEncoder` maps each calorimeter layer's image (B, 1, H, W) to an image of the
same shape. It is fully convolutional with ``same`` padding, so it works on every granularity (a
56 x 3 strip window as a 2 x 3 Tile window) and every window size; a bottleneck in channels (the
middle entry of ``channels`` is the narrowest) makes it an auto-encoder rather than an identity.
``per_layer: true`` gives every layer its own auto-encoder, ``false`` one auto-encoder shared by all
layers. With ``residual: true`` the net predicts the correction (the pileup to remove) and adds it
to its input. Images are divided by ``energy_scale`` on the way in and multiplied back on the way
out, so the output is in the input's units (MeV with ``normalisation: none``).

The data module's cached clean targets (inputs named ``<name>__target``,
:data:`datamodules.calo.TARGET_SUFFIX`) are not inputs of the net: they are left out of
``input_names``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from calolab.errors import ConfigError
from lightning_modules.nets._blocks import ACTIVATIONS

log = logging.getLogger(__name__)


def _conv_stack(channels: Sequence[int], kernel_size: int, activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    c_in = 1
    for c in channels:
        layers += [nn.Conv2d(c_in, c, kernel_size, padding=kernel_size // 2), ACTIVATIONS[activation]()]
        c_in = c
    layers.append(nn.Conv2d(c_in, 1, kernel_size, padding=kernel_size // 2))
    return nn.Sequential(*layers)


class DenoisingAutoEncoder(nn.Module):
    """One convolutional auto-encoder per layer image, or one shared by all (see the module docstring).

    Args:
        input_shapes: input name -> (1, H, W), the data module's (targets are skipped).
        per_layer: one auto-encoder per layer (true) or one for all layers (false).
        channels: channels of the hidden convolutions, e.g. ``[16, 4, 16]`` (encoder, bottleneck,
            decoder); the last convolution gives one channel back.
        kernel_size: odd kernel size of every convolution.
        activation: hidden activation (``relu``, ``selu``, ...).
        residual: predict the correction and add it to the input.
        energy_scale: images are divided by it before the convolutions (and the output
            multiplied back): 1000 for MeV images (``normalisation: none``), 1 for normalised ones.
    """

    def __init__(
        self,
        input_shapes: Mapping[str, Sequence[int]],
        per_layer: bool = True,
        channels: Sequence[int] = (16, 4, 16),
        kernel_size: int = 3,
        activation: str = "relu",
        residual: bool = True,
        energy_scale: float = 1000.0,
    ) -> None:
        super().__init__()
        from datamodules.calo import TARGET_SUFFIX

        names = [k for k in input_shapes if not str(k).endswith(TARGET_SUFFIX)]
        if not names:
            raise ConfigError(f"the auto-encoder needs at least one input image, but got {list(input_shapes)}")
        for name in names:
            shape = tuple(input_shapes[name])
            if len(shape) != 3 or shape[0] != 1:
                raise ConfigError(f"input {name!r} must be a (1, H, W) image, but got shape {shape}")
        if not isinstance(per_layer, bool):
            raise ConfigError(f"per_layer must be true or false, but got {per_layer!r}")
        if isinstance(channels, str) or not channels or not all(isinstance(c, int) and c >= 1 for c in channels):
            raise ConfigError(f"channels must be a list of positive integers, but got {channels!r}")
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size must be an odd integer >= 1, but got {kernel_size!r}")
        if activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {sorted(ACTIVATIONS)}, but got {activation!r}")
        if not isinstance(energy_scale, int | float) or isinstance(energy_scale, bool) or not energy_scale > 0:
            raise ConfigError(f"energy_scale must be a number > 0, but got {energy_scale!r}")
        self.input_names = names
        self.input_shapes = {k: tuple(input_shapes[k]) for k in names}
        self.per_layer = per_layer
        self.residual = bool(residual)
        self.energy_scale = float(energy_scale)
        if per_layer:
            self.coders = nn.ModuleDict({k: _conv_stack(channels, kernel_size, activation) for k in names})
        else:
            shared = _conv_stack(channels, kernel_size, activation)
            self.coders = nn.ModuleDict({"shared": shared})

    def coder(self, name: str) -> nn.Module:
        return self.coders[name] if self.per_layer else self.coders["shared"]

    def forward(self, *images: Tensor) -> tuple[Tensor, ...]:
        """Denoised images, one (B, 1, H, W) per input, in ``input_names`` order."""
        if len(images) != len(self.input_names):
            raise ConfigError(f"the auto-encoder takes {len(self.input_names)} images, but got {len(images)}")
        out = []
        for name, x in zip(self.input_names, images, strict=True):
            z = x / self.energy_scale
            y = self.coder(name)(z)
            out.append((z + y if self.residual else y) * self.energy_scale)
        return tuple(out)


def layer_energy(image: Tensor) -> Tensor:
    """(B,) sum of a (B, 1, H, W) image's cells."""
    return torch.flatten(image, 1).sum(dim=1)


def load_denoiser(run_id: str, tracking_uri: str | None, mlruns_dir: str | None) -> DenoisingAutoEncoder:
    """The auto-encoder of a finished ``paed`` training, with its best weights, frozen.

    ``run_id`` is the MLflow run id of that training, or ``<registered model>@<alias>`` (e.g.
    ``paed@champion``, what ``calolab promote experiment=paed registry=paed`` registers): the run
    the alias points to. The run's ``config.yaml`` gives the net's config and the input shapes (its
    ``data.inputs``); the best checkpoint under ``checkpoints/`` gives the weights (the task's ``net.*``).

    Raises:
        ConfigError: the run, model or alias does not exist, is not a denoiser training or has no checkpoint.
    """
    import tempfile

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from calolab.keys import TASK_KIND_TAG
    from calolab.pipeline.restore import best_checkpoint, run_config
    from calolab.tracking import RunNotFoundError, TrackingStore

    store = TrackingStore.resolve(tracking_uri, mlruns_dir)
    client = store.client()
    if "@" in run_id:  # a registered model's alias: the run behind that version
        from calolab.registry.errors import RegistryError
        from calolab.registry.registration import version_by_alias

        try:
            version = version_by_alias(client, run_id)
        except RegistryError as err:
            raise ConfigError(f"net.denoiser_run={run_id!r}: {err} in {store.uri}") from err
        log.info("calolab: denoiser %s is version %s, run %s", run_id, version.version, version.run_id)
        run_id = version.run_id
    try:
        cfg = run_config(run_id, store)
        task = client.get_run(run_id).data.tags.get(TASK_KIND_TAG)
        if task != "denoiser":
            raise ConfigError(f"net.denoiser_run={run_id!r} is a {task!r} training, not a denoiser (experiment=paed)")
        with tempfile.TemporaryDirectory(prefix="calolab-denoiser-") as tmp:
            state = torch.load(str(best_checkpoint(client, run_id, tmp)), map_location="cpu", weights_only=False)
    except RunNotFoundError as err:  # the run, its config.yaml or its checkpoints are missing
        raise ConfigError(f"net.denoiser_run={run_id!r}: {err}") from err
    state = state["state_dict"]
    shapes = {name: (1, *spec["shape"]) for name, spec in OmegaConf.to_container(cfg.data.inputs).items()}
    net = instantiate(cfg.net, input_shapes=shapes, _convert_="all")
    net.load_state_dict({k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")})
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


class DenoisedLayerCNN(nn.Module):
    """A classifier net on denoised images: a frozen PAED in front of a per-layer CNN, one graph.

    The inputs are the raw (MeV) pileup images; the auto-encoder of ``denoiser_run`` (a ``paed``
    training: its run id or ``<registered model>@<alias>``, see :func:`load_denoiser`) denoises them, the images are normalised as the photon CNN's data (``cluster``: every
    layer divided by the event's summed |E|; ``layer``; ``none``), and ``cnn`` (a
    :class:`~lightning_modules.nets.LayerCNN` config) gives one logit per event. With
    ``denoiser_run: null`` the same CNN sees the raw pileup images: the comparison of
    ``photon_id_paed``. The frozen auto-encoder stays in eval mode and gets no gradients; its
    weights are part of this net's state, so checkpoints and the ONNX export hold both.

    Args:
        input_shapes: input name -> (1, H, W), the data module's (raw MeV images).
        cnn: keyword arguments of :class:`~lightning_modules.nets.LayerCNN` (without input_shapes).
        denoiser_run: MLflow run id of a ``paed`` training, or None (raw images).
        tracking_uri, mlruns_dir: where that run is (``tracking.uri``, ``paths.mlruns_dir``).
        normalisation: ``cluster``, ``layer`` or ``none``, applied after denoising.
    """

    def __init__(
        self,
        input_shapes: Mapping[str, Sequence[int]],
        cnn: Mapping,
        denoiser_run: str | None = None,
        tracking_uri: str | None = None,
        mlruns_dir: str | None = None,
        normalisation: str = "cluster",
    ) -> None:
        super().__init__()
        from lightning_modules.nets.layer_cnn import LayerCNN

        if normalisation not in ("cluster", "layer", "none"):
            raise ConfigError(f"normalisation must be cluster, layer or none, but got {normalisation!r}")
        self.input_names = list(input_shapes)
        self.input_shapes = {k: tuple(v) for k, v in input_shapes.items()}
        self.normalisation = normalisation
        self.denoiser = None
        if denoiser_run:
            self.denoiser = load_denoiser(str(denoiser_run), tracking_uri, mlruns_dir)
            if list(self.denoiser.input_names) != self.input_names:
                raise ConfigError(
                    f"the denoiser of run {denoiser_run} takes {self.denoiser.input_names}, but the data's inputs are {self.input_names}"
                )
        self.cnn = LayerCNN(input_shapes=self.input_shapes, **dict(cnn))

    def train(self, mode: bool = True) -> DenoisedLayerCNN:
        super().train(mode)
        if self.denoiser is not None:
            self.denoiser.eval()  # frozen
        return self

    def forward(self, *images: Tensor) -> Tensor:
        if self.denoiser is not None:
            images = self.denoiser(*images)
        if self.normalisation != "none":
            sums = [torch.flatten(x, 1).abs().sum(dim=1) for x in images]  # (B,) per layer
            if self.normalisation == "cluster":
                total = torch.stack(sums).sum(dim=0)
                sums = [total] * len(images)
            images = tuple(
                x * torch.where(s > 0, 1.0 / s.clamp_min(1e-30), torch.zeros_like(s))[:, None, None, None]
                for x, s in zip(images, sums, strict=True)
            )
        return self.cnn(*images)
