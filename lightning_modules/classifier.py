"""Binary classification (signal vs background) as a training scheme for any net giving one logit per event.

:class:`BinaryClassifier` is the classifier :class:`~lightning_modules.task.Task`: it owns what the
plain net does not: the per-event weighted binary cross-entropy, the epoch metrics
(``train/loss``, ``val/loss``, ``val/auc`` and ``val/auc_unweighted``, ``test/...``), the optimiser
and scheduler wiring, optional ``torch.compile``, and its inference module
:class:`SignalProbability` (sigmoid of the logit: what ONNX export writes and what evaluation,
promotion and sweeps score with). Batches are
``(inputs, label, weight)`` with ``inputs`` a tuple of per-layer tensors passed to the net in
order. Optimiser and scheduler arrive as partials (``_partial_: true`` in ``conf/model/``) and are
kept in the hyper-parameters as plain ``_target_`` configs, so that a checkpoint loads with
PyTorch's default ``weights_only=True`` and ``load_from_checkpoint(path, net=...)`` rebuilds the
module with only the net supplied.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import Metric
from torchmetrics.classification import BinaryAUROC

from calolab import keys
from calolab.errors import ConfigError
from lightning_modules.task import Task

_PLAIN = (type(None), bool, int, float, str)


def weighted_bce_with_logits(logits: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Binary cross-entropy of ``logits`` (B,) against 0/1 ``target`` (B,), averaged with per-event ``weight`` (B,).

    The sum of weighted per-event losses is divided by the batch's weight sum (clamped away from
    zero, so a batch of zero weights gives a loss of 0, not NaN).
    """
    per_event = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="none")  # (B,)
    weight = weight.to(logits.dtype)
    return (per_event * weight).sum() / weight.sum().clamp_min(torch.finfo(logits.dtype).tiny)


class WeightedMean(Metric):
    """Weighted mean over an epoch of values logged with their weights, without host syncs.

    ``torchmetrics.MeanMetric`` checks for NaNs with a host sync on every update unless
    ``nan_strategy="disable"``, and that setting drops the weights (torchmetrics 1.9,
    Lightning-AI/torchmetrics#3434), hence this small metric.
    """

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("weight", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, value: Tensor, weight: Tensor) -> None:
        # out of place: states reset under inference mode (a validate() run) cannot be updated in place later
        self.total = self.total + value.detach().double() * weight.detach().double()
        self.weight = self.weight + weight.detach().double()

    def compute(self) -> Tensor:
        return (self.total / self.weight).float()


class WeightedAUROC(Metric):
    """Event-weighted ROC AUC over an epoch, computed by :func:`calolab.evaluation.metrics.auc`.

    torchmetrics' ``BinaryAUROC`` takes no sample weights, but the test evaluation and the
    promotion gate weight every event (generator weights, class balance, kinematic reweighting).
    This metric keeps the epoch's scores, labels and weights (concatenated across DDP ranks) and
    computes the AUC with the very function the test evaluation uses, so that checkpoints, early
    stopping, pruning and promotion all rank models by one figure of merit. NaN when the epoch
    saw only one class.
    """

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in ("score", "label", "weight"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, score: Tensor, label: Tensor, weight: Tensor) -> None:
        self.score.append(score.detach().float())
        self.label.append(label.detach().float())
        self.weight.append(weight.detach().float())

    def compute(self) -> Tensor:
        from calolab.evaluation.metrics import auc

        def flat(values: list[Tensor] | Tensor) -> np.ndarray:
            t = torch.cat([v.reshape(-1) for v in values]) if isinstance(values, list) else values.reshape(-1)
            return t.cpu().double().numpy()

        if isinstance(self.score, list) and not self.score:  # after a DDP sync the states are one tensor each
            return torch.tensor(float("nan"))
        y, s, w = flat(self.label), flat(self.score), flat(self.weight)
        if y.min() == y.max() or w[y == 1].sum() <= 0 or w[y == 0].sum() <= 0:
            return torch.tensor(float("nan"))
        return torch.tensor(auc(y, s, w), dtype=torch.float32)


def _plain(value: Any) -> Any:
    """``value`` as plain Python data (for a ``weights_only`` checkpoint), or raise ``TypeError``."""
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _plain(v) for k, v in value.items()}
    raise TypeError(f"not plain data: {value!r}")


def _import_path(obj: Any) -> str | None:
    """``module.qualname`` of an importable class or function, or None (lambdas, locals)."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        return None
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return None
    return f"{module}.{qualname}" if found is obj else None


def factory_config(factory: Callable[..., Any] | None) -> dict[str, Any] | None:
    """A Hydra ``_target_``/``_partial_`` config re-creating ``factory``, or None if it has none.

    ``functools.partial(torch.optim.Adam, lr=1e-4)`` gives
    ``{"_target_": "torch.optim.adam.Adam", "_partial_": True, "lr": 0.0001}``; a lambda or a local
    function gives None.
    """
    if factory is None:
        return None
    func, keywords = factory, {}
    if isinstance(factory, functools.partial):
        if factory.args:
            return None
        func, keywords = factory.func, dict(factory.keywords)
    target = _import_path(func)
    if target is None:
        return None
    try:
        return {"_target_": target, "_partial_": True, **_plain(keywords)}
    except TypeError:
        return None


def _as_factory(value: Any, what: str) -> Callable[..., Any]:
    """Accept a callable or a Hydra config (as stored in a checkpoint) and return a callable."""
    if isinstance(value, Mapping | DictConfig):
        from hydra.utils import instantiate

        if "_target_" not in value:
            raise ConfigError(f"{what} config must have a _target_, but got {dict(value)}")
        return instantiate(value, _partial_=True, _convert_="all")
    if not callable(value):
        raise ConfigError(
            f"{what} must be a callable (e.g. a _partial_: true config) or a _target_ config, but got {value!r}"
        )
    if isinstance(value, functools.partial) and any(
        isinstance(v, DictConfig | ListConfig) for v in value.keywords.values()
    ):
        # Hydra hands lists (betas: [0.9, 0.99]) over as ListConfig; they would end up in the optimiser's
        # state and make checkpoints unloadable with weights_only=True
        keywords = {
            k: OmegaConf.to_container(v, resolve=True) if isinstance(v, DictConfig | ListConfig) else v
            for k, v in value.keywords.items()
        }
        value = functools.partial(value.func, *value.args, **keywords)
    return value


def single_optimizer(parameters, optimizer_factory: Callable, scheduler_factory: Callable | None) -> Any:
    """What ``configure_optimizers`` returns for a task with one optimiser (and an optional
    scheduler stepped per epoch on ``val/loss``), shared by the classifier, regression and
    denoising tasks."""
    optimizer = optimizer_factory(parameters)
    if not isinstance(optimizer, Optimizer):
        raise ConfigError(f"optimizer must build a torch.optim.Optimizer, but built {type(optimizer).__name__}")
    if scheduler_factory is None:
        return optimizer
    scheduler = scheduler_factory(optimizer)
    return {
        "optimizer": optimizer,
        "lr_scheduler": {"scheduler": scheduler, "monitor": keys.VAL_LOSS, "interval": "epoch", "frequency": 1},
    }


class SignalProbability(nn.Module):
    """The classifier's inference module: per-layer inputs -> signal probability ``score`` (B,)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.input_names = getattr(net, "input_names", None)

    def forward(self, *inputs: Tensor) -> Tensor:
        return torch.sigmoid(self.net(*inputs))  # (B,)


class BinaryClassifier(Task):
    """Train a net giving one logit per event as a signal-vs-background classifier.

    The loss is the per-event weighted BCE (:func:`weighted_bce_with_logits`); ``*/loss`` is its
    weighted mean over the epoch. ``val/auc`` and ``test/auc`` are *event-weighted* AUCs
    (:class:`WeightedAUROC`, the test evaluation's definition, with the batch's weights);
    ``val/auc_unweighted`` (torchmetrics' ``BinaryAUROC``) is logged beside it. ``val/auc`` is the
    one figure of merit: it selects checkpoints, drives early stopping and sweeps, and its test
    twin ``test/auc`` gates promotion.

    Args:
        net: an ``nn.Module`` mapping the batch's inputs (in order) to logits ``(B,)``.
        optimizer: partial taking the parameters, e.g. ``functools.partial(torch.optim.Adam, lr=1e-4)``
            (a ``_target_`` config, as stored in checkpoints, is accepted too).
        scheduler: partial taking the optimiser, or None. A ``ReduceLROnPlateau`` follows ``val/loss``;
            any scheduler steps once per epoch.
        compile: compile the net with ``torch.compile`` (in place, so state-dict keys and ONNX export
            are unchanged) when fitting starts.

    Checkpoints keep optimiser and scheduler as plain configs (None when they were lambdas or local
    functions; pass ``optimizer=`` again then). The net is not a hyper-parameter: reload with
    ``BinaryClassifier.load_from_checkpoint(path, net=LayerCNN(...))`` or build the task and call
    :meth:`~lightning_modules.task.Task.load_weights`.
    """

    kind = "classifier"
    output_names = ("score",)
    output_doc = {"score": "signal probability, shape (batch,)"}

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., Any] | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise ConfigError(f"net must be a torch.nn.Module, but got {type(net).__name__}")
        if optimizer is None:
            raise ConfigError(
                "optimizer is missing: pass optimizer=... (a checkpoint holds none when it was a lambda or local function)"
            )
        self.net = net
        self.optimizer_factory = _as_factory(optimizer, "optimizer")
        self.scheduler_factory = None if scheduler is None else _as_factory(scheduler, "scheduler")
        self.save_hyperparameters(
            {
                "optimizer": factory_config(self.optimizer_factory),
                "scheduler": factory_config(self.scheduler_factory),
                "compile": bool(compile),
            },
            logger=False,  # the run's params are the flattened config, logged once by the pipeline
        )
        self.train_loss = WeightedMean()
        self.val_loss, self.val_auc, self.val_auc_unweighted = WeightedMean(), WeightedAUROC(), BinaryAUROC()
        self.test_loss, self.test_auc, self.test_auc_unweighted = WeightedMean(), WeightedAUROC(), BinaryAUROC()

    def inference_module(self) -> nn.Module:
        # built on demand, not a submodule: the checkpoint's keys stay the net's (net.*) alone
        return SignalProbability(self.net)

    def setup(self, stage: str) -> None:
        if self.hparams.compile and stage == "fit":
            self.net.compile()

    def forward(self, *inputs: Tensor) -> Tensor:
        """Logits ``(B,)`` of the net for per-layer inputs."""
        return self.net(*inputs)

    def _loss(self, batch: tuple[tuple[Tensor, ...], Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        inputs, label, weight = batch
        logits = self(*inputs)  # (B,)
        return weighted_bce_with_logits(logits, label, weight), logits, label, weight

    def training_step(self, batch: tuple[tuple[Tensor, ...], Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, _, _, weight = self._loss(batch)
        self.train_loss.update(loss, weight.sum())
        return loss

    def on_train_epoch_end(self) -> None:
        # logged once per epoch, not per step: a self.log call costs up to ~1 ms on a CPU (argument
        # checks, a signature inspection, moving the metric), 5-8% of a step at batch size 32
        # (bench/train_cpu.py); the metric still accumulates every step and is reset every epoch
        self.log(keys.TRAIN_LOSS, self.train_loss, on_step=False, on_epoch=True)

    def _evaluate(self, batch: tuple[tuple[Tensor, ...], Tensor, Tensor], stage: str) -> None:
        loss, logits, label, weight = self._loss(batch)
        mean, auc = getattr(self, f"{stage}_loss"), getattr(self, f"{stage}_auc")
        unweighted = getattr(self, f"{stage}_auc_unweighted")
        score = torch.sigmoid(logits)
        mean.update(loss, weight.sum())
        auc.update(score, label, weight)
        unweighted.update(score, label.long())
        self.log(f"{stage}/loss", mean, on_step=False, on_epoch=True, prog_bar=stage == "val")
        self.log(f"{stage}/auc", auc, on_step=False, on_epoch=True, prog_bar=stage == "val")
        self.log(f"{stage}/auc_unweighted", unweighted, on_step=False, on_epoch=True)

    def validation_step(self, batch: tuple[tuple[Tensor, ...], Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[tuple[Tensor, ...], Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Signal probabilities ``(B,)``; ``batch`` is ``(inputs, label, weight)`` or the inputs alone."""
        inputs = batch[0] if isinstance(batch[0], tuple | list) else batch
        return self.inference_module()(*inputs)

    def configure_optimizers(self) -> Any:
        return single_optimizer(self.parameters(), self.optimizer_factory, self.scheduler_factory)
