"""Cluster energy calibration as a training scheme: regress the truth energy from EM-scale cluster images.

:class:`EnergyRegressor` is the regression :class:`~lightning_modules.task.Task` of the
``cluster_calibration`` experiment (Cukierman et al.). Its net (e.g.
:class:`~lightning_modules.nets.pion.PionNet`) gives one number per event, the log of the
calibration factor: the target is ``log(E_true / E_EM)``, with E_EM the cluster's EM-scale
energy (the sum of its image cells, the inputs) and E_true the truth energy, an aux variable of
the data drawn with every batch (``target``). The inference module :class:`CalibratedEnergy`
returns the calibrated energy ``E_EM x exp(net)`` in MeV: what ONNX export writes and what
:meth:`~lightning_modules.task.Task.predict` (the one inference path of evaluation, export parity
and the registry) gives.

Losses (``loss``): ``mse`` on the log ratio, ``huber`` (``huber_delta`` in log units: robust to the
tails of hadronic showers), ``mae`` (the median response directly). Epoch metrics:
``train/loss``, ``val/loss``, and on R = E_pred / E_true the median ``val/response`` and the
relative resolution ``val/resolution`` = IQR/2 / median (:data:`calolab.keys.VAL_RESOLUTION`, the
figure of merit checkpoints and sweeps follow; lower is better), and their ``test/`` twins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import Metric

from calolab import keys
from calolab.errors import ConfigError
from lightning_modules.classifier import WeightedMean, _as_factory, factory_config, single_optimizer
from lightning_modules.nets.pion import MIN_CLUSTER_MEV, cluster_energy
from lightning_modules.task import Task

LOSSES = ("mse", "huber", "mae")


def response_summary(response: np.ndarray) -> tuple[float, float]:
    """(median, IQR/2 / median) of responses E_pred / E_true; NaN for none."""
    r = np.asarray(response, np.float64)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return float("nan"), float("nan")
    q25, q50, q75 = np.percentile(r, [25.0, 50.0, 75.0])
    return float(q50), float((q75 - q25) / 2.0 / q50) if q50 > 0 else float("nan")


class ResponseQuantiles(Metric):
    """Median response and relative IQR/2 resolution of E_pred / E_true over an epoch (DDP: concatenated)."""

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("log_response", default=[], dist_reduce_fx="cat")

    def update(self, log_response: Tensor) -> None:
        self.log_response.append(log_response.detach().float().reshape(-1))

    def compute(self) -> tuple[Tensor, Tensor]:
        values = self.log_response
        if isinstance(values, list):
            if not values:
                return torch.tensor(float("nan")), torch.tensor(float("nan"))
            values = torch.cat(values)
        median, resolution = response_summary(np.exp(values.cpu().double().numpy()))
        return torch.tensor(median, dtype=torch.float32), torch.tensor(resolution, dtype=torch.float32)


class CalibratedEnergy(nn.Module):
    """The regressor's inference module: cluster images (MeV, EM scale) -> calibrated energy ``energy`` (B,) MeV."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.input_names = getattr(net, "input_names", None)

    def forward(self, *inputs: Tensor) -> Tensor:
        em = cluster_energy(inputs).clamp_min(MIN_CLUSTER_MEV)  # (B,)
        return em * torch.exp(self.net(*inputs))  # (B,)


class EnergyRegressor(Task):
    """Regress a truth energy from EM-scale cluster images through the log calibration factor (see module docstring).

    Args:
        net: an ``nn.Module`` mapping the batch's inputs (in order) to ``(B,)``; its inputs must be
            all of the cluster's images (their sum is E_EM).
        optimizer: partial taking the parameters (or a ``_target_`` config, as checkpoints keep it).
        scheduler: partial taking the optimiser, or None; a ``ReduceLROnPlateau`` follows ``val/loss``.
        target: the aux variable holding the truth energy (MeV).
        loss: ``mse``, ``huber`` or ``mae`` on log(E_pred / E_true).
        huber_delta: the Huber loss's transition point (log units; 0.1 ~ 10%).
        compile: ``torch.compile`` the net when fitting starts.
    """

    kind = "regressor"
    output_names = ("energy",)
    output_doc = {"energy": "calibrated cluster energy in MeV (E_EM x exp(net)), shape (batch,)"}

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., Any] | None = None,
        target: str = "truth_e",
        loss: str = "huber",
        huber_delta: float = 0.1,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise ConfigError(f"net must be a torch.nn.Module, but got {type(net).__name__}")
        if optimizer is None:
            raise ConfigError("optimizer is missing: pass optimizer=... (a _partial_: true config)")
        if loss not in LOSSES:
            raise ConfigError(f"model.loss must be one of {list(LOSSES)}, but got loss={loss!r}")
        if not isinstance(huber_delta, int | float) or isinstance(huber_delta, bool) or not huber_delta > 0:
            raise ConfigError(f"model.huber_delta must be a number > 0, but got huber_delta={huber_delta!r}")
        if not isinstance(target, str) or not target:
            raise ConfigError(f"model.target must name an aux variable, but got target={target!r}")
        self.net = net
        self.target = target
        self.loss_name = loss
        self.huber_delta = float(huber_delta)
        self.optimizer_factory = _as_factory(optimizer, "optimizer")
        self.scheduler_factory = None if scheduler is None else _as_factory(scheduler, "scheduler")
        self.save_hyperparameters(
            {
                "optimizer": factory_config(self.optimizer_factory),
                "scheduler": factory_config(self.scheduler_factory),
                "target": target,
                "loss": loss,
                "huber_delta": self.huber_delta,
                "compile": bool(compile),
            },
            logger=False,
        )
        self.train_loss = WeightedMean()
        self.val_loss, self.val_response = WeightedMean(), ResponseQuantiles()
        self.test_loss, self.test_response = WeightedMean(), ResponseQuantiles()

    def inference_module(self) -> nn.Module:
        return CalibratedEnergy(self.net)

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None or not hasattr(dm, "request_batch_aux"):
            raise ConfigError("the regression task needs a calolab datamodule (its target is an aux variable)")
        dm.request_batch_aux([self.target], "the regression task (model.target)")
        if self.hparams.compile and stage == "fit":
            self.net.compile()

    def forward(self, *inputs: Tensor) -> Tensor:
        """Predicted log(E_true / E_EM) ``(B,)``."""
        return self.net(*inputs)

    def _per_event_loss(self, diff: Tensor) -> Tensor:
        if self.loss_name == "mse":
            return diff**2
        if self.loss_name == "mae":
            return diff.abs()
        return F.huber_loss(diff, torch.zeros_like(diff), reduction="none", delta=self.huber_delta)

    def _step(self, batch) -> tuple[Tensor, Tensor, Tensor]:
        if len(batch) != 4:
            raise ConfigError(
                f"the regression task expects (inputs, label, weight, aux) batches with its target {self.target!r}; "
                "the datamodule was not asked for it (EnergyRegressor.setup does that)"
            )
        inputs, _, weight, aux = batch
        em = cluster_energy(inputs).clamp_min(MIN_CLUSTER_MEV)  # (B,)
        log_response = self(*inputs) - torch.log(aux[self.target].clamp_min(MIN_CLUSTER_MEV) / em)  # (B,)
        w = weight.to(log_response.dtype)
        loss = (self._per_event_loss(log_response) * w).sum() / w.sum().clamp_min(torch.finfo(w.dtype).tiny)
        return loss, log_response, weight

    def training_step(self, batch, batch_idx: int) -> Tensor:
        loss, _, weight = self._step(batch)
        self.train_loss.update(loss, weight.sum())
        return loss

    def on_train_epoch_end(self) -> None:
        self.log(keys.TRAIN_LOSS, self.train_loss, on_step=False, on_epoch=True)

    def _evaluate(self, batch, stage: str) -> None:
        loss, log_response, weight = self._step(batch)
        getattr(self, f"{stage}_loss").update(loss, weight.sum())
        getattr(self, f"{stage}_response").update(log_response)
        self.log(f"{stage}/loss", getattr(self, f"{stage}_loss"), on_step=False, on_epoch=True, prog_bar=stage == "val")

    def _log_response(self, stage: str) -> None:
        metric = getattr(self, f"{stage}_response")
        median, resolution = metric.compute()
        self.log(f"{stage}/response", median, prog_bar=False, sync_dist=False)
        self.log(f"{stage}/resolution", resolution, prog_bar=stage == "val", sync_dist=False)
        metric.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_response("val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_response("test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Calibrated energies ``(B,)`` MeV; ``batch`` is ``(inputs, label, weight[, aux])`` or the inputs alone."""
        inputs = batch[0] if isinstance(batch[0], tuple | list) else batch
        return self.inference_module()(*inputs)

    def configure_optimizers(self) -> Any:
        return single_optimizer(self.parameters(), self.optimizer_factory, self.scheduler_factory)
