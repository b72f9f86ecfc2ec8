"""Adversarially decorrelated classification: a classifier trained against an adversary (Learning to Pivot).

:class:`AdversarialClassifier` is the task of the pileup-robust and mass-decorrelated taggers
(Louppe et al., arXiv:1611.01046; Shimmin et al., arXiv:1703.03507). An adversary net
(:mod:`lightning_modules.nets.adversary`) reads the classifier's signal probability (optionally
with further standardised variables, e.g. the jet pT) on *background* events and predicts a
nuisance: the pileup class (mu = 0 vs 50) or the standardised jet mass (a Gaussian mixture
density network). The classifier minimises ``L_clf - lambda * L_adv``, so that its output carries
no information the adversary can use; ``lambda = 0`` is the plain classifier trained alongside an
adversary that only watches (the reference of every lambda scan).

Training uses manual optimisation with two optimisers, epoch by epoch:

1. ``pretrain_epochs``: the classifier alone (the weighted BCE of :class:`BinaryClassifier`);
2. ``adversary_pretrain_epochs``: the adversary alone, on the frozen classifier's output;
3. then, every batch: ``adversary_steps`` adversary updates, then one classifier update on
   ``L_clf - lambda * L_adv``.

The adversary's target and inputs are aux variables of the data, drawn with every batch
(:meth:`datamodules.base.CachedImageDataModule.request_batch_aux`); a continuous target and the
extra inputs are standardised with the training background's mean and standard deviation (stored
as buffers, so a checkpoint carries them). Everything the pipeline uses is the classifier's:
:meth:`inference_module` is the net + sigmoid (ONNX holds the classifier only; the adversary is
never exported), and ``predict`` is :class:`BinaryClassifier`'s, so evaluation, export, promotion
and sweeps work unchanged. Per epoch it logs ``train/loss`` (the BCE), ``train/adv_loss``,
``val/loss``, ``val/auc``, ``val/adv_loss``, ``val/rej50`` and ``val/inv_jsd50`` (1/JSD of the
configured decorrelation variable, :func:`calolab.evaluation.decorrelation.inverse_jsd`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from calolab import keys
from calolab.errors import ConfigError, suggest
from lightning_modules.classifier import (
    BinaryClassifier,
    WeightedMean,
    _as_factory,
    factory_config,
    weighted_bce_with_logits,
)

log = logging.getLogger(__name__)

#: the training phases, by epoch
PHASES = ("classifier", "adversary", "adversarial")


def weighted_mean(values: Tensor, weight: Tensor) -> Tensor:
    """Sum of ``values * weight`` over the weight sum (0 for an empty or zero-weight batch)."""
    weight = weight.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp_min(torch.finfo(values.dtype).tiny)


class AdversarialClassifier(BinaryClassifier):
    """A classifier trained against an adversary of a nuisance variable (see the module docstring).

    Args:
        net: the classifier, as :class:`BinaryClassifier`'s (one logit per event).
        optimizer: the classifier's optimiser (partial taking the parameters).
        adversary: partial building the adversary from ``n_inputs`` (e.g.
            :class:`~lightning_modules.nets.adversary.MixtureDensityAdversary`); its input is the
            signal probability followed by ``adversary_inputs``.
        adversary_optimizer: the adversary's optimiser (partial taking the parameters).
        lam: lambda >= 0, the weight of the adversary's loss in ``L_clf - lambda * L_adv``.
        target: the aux variable the adversary predicts (e.g. ``mu``, ``jet_m``).
        adversary_inputs: further aux variables the adversary reads (standardised), e.g. ``[jet_pt]``.
        pretrain_epochs: epochs of classifier-only training first.
        adversary_pretrain_epochs: then epochs of adversary-only training.
        adversary_steps: adversary updates per classifier update in the adversarial phase.
        decorrelation: ``{variable, label, scale, bins, eff_sig}`` of ``val/inv_jsd50``
            (:class:`~calolab.evaluation.decorrelation.DecorrelationSpec`).
        scheduler: the classifier's scheduler partial, or None (stepped once per epoch;
            ``ReduceLROnPlateau`` with ``val/loss``).
        compile: as :class:`BinaryClassifier`.
    """

    kind = "adversarial_classifier"

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., Optimizer],
        adversary: Callable[..., nn.Module],
        adversary_optimizer: Callable[..., Optimizer],
        lam: float,
        target: str,
        adversary_inputs: Sequence[str] = (),
        pretrain_epochs: int = 2,
        adversary_pretrain_epochs: int = 2,
        adversary_steps: int = 1,
        decorrelation: Mapping[str, Any] | None = None,
        scheduler: Callable[..., Any] | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__(
            net=net,
            optimizer=optimizer,
            scheduler=scheduler,
            compile=compile,
            decorrelation=decorrelation if decorrelation is not None else {"variable": target},
        )
        self.automatic_optimization = False
        lam = _number(lam, "model.lam")
        if lam < 0:
            raise ConfigError(
                f"model.lam must be >= 0 (lambda weighs the adversary's loss in L_clf - lambda * L_adv; "
                f"0 is no decorrelation), but got lam={lam:g}"
            )
        self.lam = lam
        self.target = _name(target, "model.target")
        if isinstance(adversary_inputs, str) or not isinstance(adversary_inputs, Sequence):
            raise ConfigError(f"model.adversary_inputs must be a list of aux variables, but got {adversary_inputs!r}")
        self.adversary_inputs = [_name(a, "model.adversary_inputs entry") for a in adversary_inputs]
        self.pretrain_epochs = _count(pretrain_epochs, "model.pretrain_epochs", 0)
        self.adversary_pretrain_epochs = _count(adversary_pretrain_epochs, "model.adversary_pretrain_epochs", 0)
        self.adversary_steps = _count(adversary_steps, "model.adversary_steps", 1)
        self.adversary_factory = _as_factory(adversary, "adversary")
        self.adversary = self.adversary_factory(n_inputs=1 + len(self.adversary_inputs))
        if not callable(getattr(self.adversary, "nll", None)):
            raise ConfigError(
                f"adversary must build a net with nll(x, target) (lightning_modules.nets.adversary), "
                f"but built {type(self.adversary).__name__}"
            )
        self.adversary_optimizer_factory = _as_factory(adversary_optimizer, "adversary_optimizer")
        # standardisation of the continuous target and the extra inputs (training background), saved
        self.register_buffer("target_shift", torch.zeros(()))
        self.register_buffer("target_scale", torch.ones(()))
        self.register_buffer("input_shift", torch.zeros(len(self.adversary_inputs)))
        self.register_buffer("input_scale", torch.ones(len(self.adversary_inputs)))
        self.save_hyperparameters(
            {
                **dict(self.hparams),
                "adversary": factory_config(self.adversary_factory),
                "adversary_optimizer": factory_config(self.adversary_optimizer_factory),
                "lam": self.lam,
                "target": self.target,
                "adversary_inputs": list(self.adversary_inputs),
                "pretrain_epochs": self.pretrain_epochs,
                "adversary_pretrain_epochs": self.adversary_pretrain_epochs,
                "adversary_steps": self.adversary_steps,
            },
            logger=False,
        )
        self.train_adv_loss, self.val_adv_loss = WeightedMean(), WeightedMean()

    # -- phases and data ------------------------------------------------------------------------
    def phase(self, epoch: int | None = None) -> str:
        """``classifier``, ``adversary`` or ``adversarial``: what epoch ``epoch`` (default: the current one) trains."""
        epoch = self.current_epoch if epoch is None else epoch
        if epoch < self.pretrain_epochs:
            return "classifier"
        if epoch < self.pretrain_epochs + self.adversary_pretrain_epochs:
            return "adversary"
        return "adversarial"

    @property
    def batch_variables(self) -> list[str]:
        return list(dict.fromkeys([self.target, *self.adversary_inputs, *super().batch_variables]))

    def check_variables(self, aux: Sequence[str]) -> None:
        """One ConfigError per kind of missing variable: adversary target, adversary input, decorrelation variable."""
        aux = list(aux)
        listing = f"aux variables of the data: {', '.join(aux)} (data.aux)"
        if self.target not in aux:
            raise ConfigError(
                f"adversary target model.target={self.target!r} is not an aux variable of the data"
                f"{suggest(self.target, aux)}; {listing}"
            )
        for name in self.adversary_inputs:
            if name not in aux:
                raise ConfigError(
                    f"adversary input {name!r} (model.adversary_inputs) is not an aux variable of the data"
                    f"{suggest(name, aux)}; {listing}"
                )
        self.check_decorrelation_variable(aux)

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None or not hasattr(dm, "request_batch_aux"):
            raise ConfigError("the adversarial task needs a calolab datamodule (its aux variables feed the adversary)")
        self.check_variables([*dm.aux, "event_number"])
        super().setup(stage)  # compile; the decorrelation variable
        dm.request_batch_aux(self.batch_variables, "the adversarial task")  # every stage: batches carry aux
        if stage == "fit":
            self._standardise_from(dm.arrays("train"))

    def _standardise_from(self, train) -> None:
        """Shift and scale of the target (continuous adversaries) and extra inputs from the training background."""
        bkg = np.asarray(train.label) == 0
        if not bkg.any():
            raise ConfigError("the training split has no background events: the adversary has nothing to learn from")

        def stats(name: str) -> tuple[float, float]:
            v = np.asarray(train.aux[name], dtype=np.float64)[bkg]
            if not np.all(np.isfinite(v)):
                raise ConfigError(f"aux variable {name!r} must be finite for every training background event")
            sd = float(v.std())
            return float(v.mean()), sd if sd > 0 else 1.0

        if self.adversary.continuous:
            shift, scale = stats(self.target)
            self.target_shift.fill_(shift)
            self.target_scale.fill_(scale)
        else:  # a class adversary: every training value must be one of its classes
            values = torch.as_tensor(np.asarray(train.aux[self.target], dtype=np.float32)[bkg])
            try:
                self.adversary.target_index(torch.unique(values).to(self.target_shift.device))
            except ConfigError as err:
                raise ConfigError(f"adversary target {self.target!r}: {err}") from err
        for i, name in enumerate(self.adversary_inputs):
            self.input_shift[i], self.input_scale[i] = stats(name)

    def _unpack(self, batch) -> tuple[tuple[Tensor, ...], Tensor, Tensor, dict[str, Tensor]]:
        if len(batch) != 4:
            raise ConfigError(
                "the adversarial task expects (inputs, label, weight, aux) batches; the datamodule was not asked "
                "for the adversary's aux variables (AdversarialClassifier.setup does that)"
            )
        return batch

    def _adversary_features(self, score: Tensor, aux: Mapping[str, Tensor]) -> Tensor:
        """(B, 1 + n_extra): the probability, then the standardised extra inputs."""
        cols = [score.unsqueeze(-1)]
        for i, name in enumerate(self.adversary_inputs):
            cols.append(((aux[name] - self.input_shift[i]) / self.input_scale[i]).unsqueeze(-1))
        return torch.cat(cols, dim=-1)

    def adversary_loss(self, score: Tensor, label: Tensor, weight: Tensor, aux: Mapping[str, Tensor]) -> Tensor:
        """The adversary's weighted mean NLL of the target on the batch's background events."""
        bkg = label == 0
        target = aux[self.target][bkg]
        if self.adversary.continuous:
            target = (target - self.target_shift) / self.target_scale
        features = self._adversary_features(score[bkg], {k: v[bkg] for k, v in aux.items()})
        return weighted_mean(self.adversary.nll(features, target), weight[bkg])

    # -- training -------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> Tensor:
        inputs, label, weight, aux = self._unpack(batch)
        opt_clf, opt_adv = self.optimizers()
        phase = self.phase()
        bkg_weight = weight[label == 0].sum()
        if phase != "classifier":
            with torch.no_grad():
                score = torch.sigmoid(self.net(*inputs))  # (B,) the frozen classifier's output
            for _ in range(self.adversary_steps if phase == "adversarial" else 1):
                adv = self.adversary_loss(score, label, weight, aux)
                opt_adv.zero_grad()
                self.manual_backward(adv)
                opt_adv.step()
            self.train_adv_loss.update(adv.detach(), bkg_weight)
        if phase == "adversary":
            return adv.detach()
        logits = self.net(*inputs)  # (B,)
        clf = weighted_bce_with_logits(logits, label, weight)
        loss = clf
        if phase == "adversarial" and self.lam > 0:
            loss = clf - self.lam * self.adversary_loss(torch.sigmoid(logits), label, weight, aux)
        opt_clf.zero_grad()
        self.manual_backward(loss)
        opt_clf.step()
        self.train_loss.update(clf.detach(), weight.sum())
        return loss.detach()

    def on_train_epoch_end(self) -> None:
        if self.phase() != "adversary":
            self.log(keys.TRAIN_LOSS, self.train_loss, on_step=False, on_epoch=True)
        if self.phase() != "classifier":
            self.log(keys.TRAIN_ADV_LOSS, self.train_adv_loss, on_step=False, on_epoch=True)
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                val_loss = self.trainer.callback_metrics.get(keys.VAL_LOSS)
                if val_loss is not None:
                    scheduler.step(val_loss)
            else:
                scheduler.step()

    def on_fit_start(self) -> None:
        max_epochs = self.trainer.max_epochs
        first = self.pretrain_epochs + self.adversary_pretrain_epochs
        if max_epochs is not None and 0 <= max_epochs <= first:
            log.warning(
                "adversarial training never starts: trainer.max_epochs=%d <= pretrain_epochs + "
                "adversary_pretrain_epochs = %d",
                max_epochs,
                first,
            )

    # -- validation -----------------------------------------------------------------------------
    def _evaluate(self, batch, stage: str) -> None:
        inputs, label, weight, aux = self._unpack(batch)
        super()._evaluate(batch, stage)  # loss, AUCs and the epoch's val/inv_jsd50 states
        if stage != "val":
            return
        score = torch.sigmoid(self.net(*inputs))
        self.val_adv_loss.update(self.adversary_loss(score, label, weight, aux), weight[label == 0].sum())
        self.log(keys.VAL_ADV_LOSS, self.val_adv_loss, on_step=False, on_epoch=True)

    def configure_optimizers(self) -> Any:
        opt_clf = self.optimizer_factory(self.net.parameters())
        opt_adv = self.adversary_optimizer_factory(self.adversary.parameters())
        for name, opt in (("optimizer", opt_clf), ("adversary_optimizer", opt_adv)):
            if not isinstance(opt, Optimizer):
                raise ConfigError(f"{name} must build a torch.optim.Optimizer, but built {type(opt).__name__}")
        if self.scheduler_factory is None:
            return [opt_clf, opt_adv]
        return [opt_clf, opt_adv], [self.scheduler_factory(opt_clf)]


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{what} must be a finite number, but got {value!r}")
    return float(value)


def _count(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}, but got {value!r}")
    return value


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what} must name an aux variable, but got {value!r}")
    return value
