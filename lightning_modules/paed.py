"""Pileup denoising as a training scheme (PAED, Belfkir): map pileup cell images to pileup-free ones.

:class:`DenoisingTask` is the :class:`~lightning_modules.task.Task` of the ``paed`` experiment. Its
net (:class:`~lightning_modules.nets.autoencoder.DenoisingAutoEncoder`) maps every layer image to a
denoised one; the targets are the same events' pileup-free images, which the data module caches
beside the inputs (``data.targets``, inputs ``<name>__target``) from a paired sample
(``calolab generate sample=photons sample.pileup_overlay=true sample.pileup_paired=true``). The
loss is the mean over layers of each layer's per-cell MSE in units of the net's ``energy_scale``
(unweighted: denoising does not depend on the class). Epoch metrics: ``train/loss``, ``val/loss``
(the figure of merit, lower is better) and per layer ``val/mse_<layer>`` (MeV^2 with
``normalisation: none``), and their ``test/`` twins.

The inference module is the auto-encoder itself: pileup images in, one ``denoised_<layer>`` image
per layer out; it is what ONNX export writes. Its parity events are fixed pileup-like images
(:meth:`DenoisingTask.example_inputs`), since the data's inputs also hold the targets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from calolab import keys
from calolab.errors import ConfigError
from lightning_modules.classifier import WeightedMean, _as_factory, factory_config, single_optimizer
from lightning_modules.task import Task


class DenoisingTask(Task):
    """Train an auto-encoder to remove pileup from cell images (see the module docstring).

    Args:
        net: an ``nn.Module`` with ``input_names`` and ``input_shapes`` mapping the images (in
            order) to as many denoised images (a :class:`DenoisingAutoEncoder`).
        optimizer: partial taking the parameters (or a ``_target_`` config, as checkpoints keep it).
        scheduler: partial taking the optimiser, or None; a ``ReduceLROnPlateau`` follows ``val/loss``.
        compile: ``torch.compile`` the net when fitting starts.
    """

    kind = "denoiser"
    output_doc: dict[str, str] = {}

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., Any] | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(net, nn.Module) or not getattr(net, "input_names", None):
            raise ConfigError(
                f"net must be an nn.Module with input_names (an auto-encoder), but got {type(net).__name__}"
            )
        if optimizer is None:
            raise ConfigError("optimizer is missing: pass optimizer=... (a _partial_: true config)")
        self.net = net
        self.layer_names = list(net.input_names)
        self.output_names = tuple(f"denoised_{k}" for k in self.layer_names)
        self.output_doc = {
            f"denoised_{k}": f"the {k} image without pileup, in the input's units, shape (batch, 1, H, W)"
            for k in self.layer_names
        }
        self.optimizer_factory = _as_factory(optimizer, "optimizer")
        self.scheduler_factory = None if scheduler is None else _as_factory(scheduler, "scheduler")
        self.save_hyperparameters(
            {
                "optimizer": factory_config(self.optimizer_factory),
                "scheduler": factory_config(self.scheduler_factory),
                "compile": bool(compile),
            },
            logger=False,
        )
        self.scale = float(getattr(net, "energy_scale", 1.0))
        self._index: tuple[list[int], list[int]] | None = None
        self.train_loss = WeightedMean()
        for stage in ("val", "test"):
            setattr(self, f"{stage}_loss", WeightedMean())
            setattr(self, f"{stage}_mse", nn.ModuleList(WeightedMean() for _ in self.layer_names))

    # -- the task interface ----------------------------------------------------------------------
    def inference_module(self) -> nn.Module:
        return self.net

    def inference_inputs(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(self.net.input_shapes[k]) for k in self.layer_names}

    def example_inputs(self, n: int) -> dict[str, np.ndarray]:
        """``n`` fixed pileup-like images per layer: Gaussian noise, sparse deposits and one hot core."""
        rng = np.random.default_rng(20260)
        out = {}
        for k, (_, h, w) in self.inference_inputs().items():
            noise = rng.normal(0.0, 50.0, (n, 1, h, w))
            deposits = rng.exponential(400.0, (n, 1, h, w)) * (rng.random((n, 1, h, w)) < 0.3)
            deposits[:, 0, h // 2, w // 2] += rng.exponential(20_000.0, n)
            out[k] = ((noise + deposits) / 1000.0 * self.scale).astype(np.float32)
        return out

    def export_metadata(self) -> dict[str, str]:
        return {"denoised_layers": ",".join(self.layer_names)}

    # -- training --------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        targets = getattr(dm, "targets", None)
        if dm is None or not targets:
            raise ConfigError(
                "the paed task needs data with clean targets: set data.targets (input -> its *_nopu branch, "
                "conf/data/paed.yaml) on a paired sample"
            )
        missing = [k for k in self.layer_names if k not in targets]
        if missing:
            raise ConfigError(f"data.targets has no clean target for the inputs {missing} (targets: {dict(targets)})")
        names = list(dm.input_names)
        self._index = ([names.index(k) for k in self.layer_names], [names.index(targets[k]) for k in self.layer_names])
        if self.hparams.compile and stage == "fit":
            self.net.compile()

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        return self.net(*inputs)

    def _split(self, inputs) -> tuple[list[Tensor], list[Tensor]]:
        n = len(self.layer_names)
        noisy_idx, target_idx = self._index or (list(range(n)), list(range(n, 2 * n)))
        return [inputs[i] for i in noisy_idx], [inputs[i] for i in target_idx]

    def _step(self, batch) -> tuple[Tensor, list[Tensor], int]:
        noisy, clean = self._split(batch[0])
        denoised = self(*noisy)
        per_layer = [((d - c) ** 2).mean() for d, c in zip(denoised, clean, strict=True)]  # input units^2
        loss = torch.stack(per_layer).mean() / self.scale**2
        return loss, per_layer, len(noisy[0])

    def training_step(self, batch, batch_idx: int) -> Tensor:
        loss, _, n = self._step(batch)
        self.train_loss.update(loss.detach(), torch.tensor(float(n), device=loss.device))
        return loss

    def on_train_epoch_end(self) -> None:
        self.log(keys.TRAIN_LOSS, self.train_loss, on_step=False, on_epoch=True)

    def _evaluate(self, batch, stage: str) -> None:
        loss, per_layer, n = self._step(batch)
        count = torch.tensor(float(n), device=loss.device)
        getattr(self, f"{stage}_loss").update(loss, count)
        self.log(f"{stage}/loss", getattr(self, f"{stage}_loss"), on_step=False, on_epoch=True, prog_bar=stage == "val")
        for name, metric, value in zip(self.layer_names, getattr(self, f"{stage}_mse"), per_layer, strict=True):
            metric.update(value.detach(), count)
            self.log(f"{stage}/mse_{name}", metric, on_step=False, on_epoch=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> tuple[Tensor, ...]:
        """Denoised images; ``batch`` is ``(inputs, label, weight[, aux])`` or the noisy inputs alone."""
        inputs = batch[0] if isinstance(batch[0], tuple | list) else batch
        noisy = self._split(inputs)[0] if len(inputs) == 2 * len(self.layer_names) else list(inputs)
        return self.net(*noisy)

    def configure_optimizers(self) -> Any:
        return single_optimizer(self.parameters(), self.optimizer_factory, self.scheduler_factory)
