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
import logging
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
from calolab.errors import ConfigError, suggest
from calolab.evaluation.decorrelation import DecorrelationSpec, inverse_jsd
from lightning_modules.task import Task

_PLAIN = (type(None), bool, int, float, str)

log = logging.getLogger(__name__)


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


class DecorrelationScores(Metric):
    """The epoch's scores, labels, weights and decorrelation variable; computes 1/JSD and R50.

    States are concatenated across DDP ranks. NaN when the epoch lacks a class or the cut leaves
    no background on one side; ``constant`` says whether the background's variable took one value
    (1/JSD then says nothing: both shapes are that one bin).
    """

    full_state_update = False

    def __init__(self, spec: DecorrelationSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        for name in ("score", "label", "weight", "value"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, score: Tensor, label: Tensor, weight: Tensor, value: Tensor) -> None:
        for name, t in (("score", score), ("label", label), ("weight", weight), ("value", value)):
            getattr(self, name).append(t.detach().float().reshape(-1))

    def compute(self) -> dict[str, Tensor]:
        from calolab.evaluation.metrics import rejection_at_efficiency

        nan = {"inv_jsd": torch.tensor(float("nan")), "rej": torch.tensor(float("nan")), "constant": False}
        if isinstance(self.score, list) and not self.score:
            return nan

        def flat(values: list[Tensor] | Tensor) -> np.ndarray:
            t = torch.cat(values) if isinstance(values, list) else values.reshape(-1)
            return t.cpu().double().numpy()

        y, s, w, v = (flat(x) for x in (self.label, self.score, self.weight, self.value))
        if y.min() == y.max():
            return nan
        out = {}
        background = v[y == 0]
        constant = background.size > 0 and bool(np.ptp(background) == 0)
        try:
            out["inv_jsd"] = inverse_jsd(y, s, w, v * self.spec.scale, self.spec.eff_sig, self.spec.bins)
        except ConfigError:
            out["inv_jsd"] = float("nan")
        out["rej"] = rejection_at_efficiency(y, s, self.spec.eff_sig, w)
        return {**{k: torch.tensor(x, dtype=torch.float32) for k, x in out.items()}, "constant": constant}


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
    twin ``test/auc`` gates promotion. With ``decorrelation`` set, every validation also logs
    ``val/inv_jsd50`` (1/JSD of the background's variable passing vs failing the 50% cut, the
    evaluation's ``test/inv_jsd50`` on the validation split) and ``val/rej50``, so that plain and
    adversarially decorrelated taggers show the same trade-off per epoch; the variable is drawn with
    every batch (``(inputs, label, weight, aux)`` batches), and ``val/inv_jsd50`` is not logged while
    the validation background holds one value of it (e.g. one pileup condition).

    Args:
        net: an ``nn.Module`` mapping the batch's inputs (in order) to logits ``(B,)``.
        optimizer: partial taking the parameters, e.g. ``functools.partial(torch.optim.Adam, lr=1e-4)``
            (a ``_target_`` config, as stored in checkpoints, is accepted too).
        scheduler: partial taking the optimiser, or None. A ``ReduceLROnPlateau`` follows ``val/loss``;
            any scheduler steps once per epoch.
        compile: compile the net with ``torch.compile`` (in place, so state-dict keys and ONNX export
            are unchanged) when fitting starts.
        decorrelation: ``{variable, label, scale, bins, eff_sig}`` of ``val/inv_jsd<eff>``
            (:class:`~calolab.evaluation.decorrelation.DecorrelationSpec`; ``conf/model/classifier.yaml``
            takes the evaluation's entry for the jet mass, else for mu), or None.

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
        decorrelation: Mapping[str, Any] | None = None,
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
        if decorrelation is not None and not isinstance(decorrelation, Mapping):
            raise ConfigError(
                f"model.decorrelation must be {{variable, label, scale, bins, eff_sig}} or null, but got {decorrelation!r}"
            )
        self.decorrelation_spec = (
            None if decorrelation is None else DecorrelationSpec.from_config("val", _plain(decorrelation))
        )
        self.save_hyperparameters(
            {
                "optimizer": factory_config(self.optimizer_factory),
                "scheduler": factory_config(self.scheduler_factory),
                "compile": bool(compile),
                "decorrelation": None
                if self.decorrelation_spec is None
                else {k: getattr(self.decorrelation_spec, k) for k in DecorrelationSpec.KEYS},
            },
            logger=False,  # the run's params are the flattened config, logged once by the pipeline
        )
        self.val_decorrelation = (
            None if self.decorrelation_spec is None else DecorrelationScores(self.decorrelation_spec)
        )
        self._constant_warned = False
        self.train_loss = WeightedMean()
        self.val_loss, self.val_auc, self.val_auc_unweighted = WeightedMean(), WeightedAUROC(), BinaryAUROC()
        self.test_loss, self.test_auc, self.test_auc_unweighted = WeightedMean(), WeightedAUROC(), BinaryAUROC()

    def inference_module(self) -> nn.Module:
        # built on demand, not a submodule: the checkpoint's keys stay the net's (net.*) alone
        return SignalProbability(self.net)

    def setup(self, stage: str) -> None:
        if self.hparams.compile and stage == "fit":
            self.net.compile()
        if self.decorrelation_spec is not None and stage in ("fit", "validate"):
            dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
            if dm is None or not hasattr(dm, "request_batch_aux"):
                raise ConfigError("model.decorrelation (val/inv_jsd50) needs a calolab datamodule: its aux variables")
            self.check_decorrelation_variable([*dm.aux, "event_number"])
            dm.request_batch_aux(self.batch_variables, f"the {self.kind} task")

    @property
    def batch_variables(self) -> list[str]:
        """The aux variables every batch carries (``(inputs, label, weight, aux)`` batches when any)."""
        return [] if self.decorrelation_spec is None else [self.decorrelation_spec.variable]

    def check_decorrelation_variable(self, aux: list[str]) -> None:
        """One ConfigError when ``model.decorrelation.variable`` is not among the data's ``aux``."""
        variable = self.decorrelation_spec.variable if self.decorrelation_spec is not None else None
        if variable is not None and variable not in aux:
            raise ConfigError(
                f"decorrelation variable model.decorrelation.variable={variable!r} is not an aux variable "
                f"of the data{suggest(variable, aux)}; aux variables of the data: {', '.join(aux)} (data.aux)"
            )

    def forward(self, *inputs: Tensor) -> Tensor:
        """Logits ``(B,)`` of the net for per-layer inputs."""
        return self.net(*inputs)

    def _loss(self, batch: tuple[tuple[Tensor, ...], Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        inputs, label, weight = batch[:3]  # a fourth entry: the aux variables (batch_variables)
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
        if stage == "val" and self.val_decorrelation is not None and len(batch) == 4:
            self.val_decorrelation.update(score, label, weight, batch[3][self.decorrelation_spec.variable])

    def on_validation_epoch_end(self) -> None:
        if self.val_decorrelation is None:
            return
        values = self.val_decorrelation.compute()
        self.val_decorrelation.reset()
        tag = self.decorrelation_spec.tag
        # every rank holds the same value (the states are gathered); sync_dist averages equal numbers
        self.log(f"val/rej{tag}", values["rej"], sync_dist=True)
        if not values["constant"]:
            self.log(f"val/inv_jsd{tag}", values["inv_jsd"], prog_bar=True, sync_dist=True)
        elif not self._constant_warned:
            self._constant_warned = True
            log.info(
                "val/inv_jsd%s not logged: %s takes one value in the validation background",
                tag,
                self.decorrelation_spec.variable,
            )

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
