"""Adversary nets of the decorrelated taggers: they read the classifier's output, predict a nuisance.

Learning to Pivot (Louppe et al., arXiv:1611.01046) trains an adversary r to predict a nuisance
parameter from the classifier f's output on background; f is trained to minimise
``L_f - lambda L_r``, so that its output carries no information r can use. Two adversaries:

- :class:`ClassAdversary` - a categorical nuisance (the pileup condition mu = 0 vs mu = 50): an
  MLP giving one logit per class; its negative log-likelihood is the cross-entropy.
- :class:`MixtureDensityAdversary` - a continuous nuisance (the standardised jet mass,
  Shimmin et al., arXiv:1703.03507): a Gaussian mixture density network (Bishop 1994) giving
  mixture weights, means and widths; its negative log-likelihood is
  ``-log sum_k pi_k N(y; mu_k, sigma_k)`` (:func:`gaussian_mixture_nll`).

Both take ``(B, n_inputs)`` features (the classifier's probability, optionally further
standardised variables such as pT) and expose ``nll(x, target) -> (B,)``: the per-event negative
log-likelihood of the target under the adversary's prediction, which the adversarial task
(:mod:`lightning_modules.adversarial`) averages with event weights. ``n_inputs`` is given by the
task (one plus the extra inputs it is configured with), never typed in a config.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from calolab.errors import ConfigError

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _mlp(n_in: int, hidden: Sequence[int], n_out: int, activation: str) -> nn.Sequential:
    acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "silu": nn.SiLU}
    if activation not in acts:
        raise ConfigError(f"adversary activation must be one of {sorted(acts)}, but got {activation!r}")
    if isinstance(hidden, int) or not all(isinstance(h, int) and h > 0 for h in hidden):
        raise ConfigError(f"adversary hidden must be a list of positive layer sizes, but got {hidden!r}")
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(n_in, h), acts[activation]()]
        n_in = h
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


def gaussian_mixture_nll(logit_pi: Tensor, mean: Tensor, log_sigma: Tensor, target: Tensor) -> Tensor:
    """Per-event ``-log sum_k pi_k N(target; mean_k, exp(log_sigma_k))``, (B, K) parameters -> (B,).

    Computed with a log-sum-exp over components; with one component it is the Gaussian NLL
    ``(y - mu)^2 / (2 sigma^2) + log sigma + log sqrt(2 pi)``.
    """
    z = (target.unsqueeze(-1) - mean) * torch.exp(-log_sigma)  # (B, K)
    log_component = -0.5 * z**2 - log_sigma - _LOG_SQRT_2PI  # (B, K)
    return -torch.logsumexp(F.log_softmax(logit_pi, dim=-1) + log_component, dim=-1)  # (B,)


class ClassAdversary(nn.Module):
    """Predicts which of ``classes`` (values of the nuisance, e.g. mu = 0, 50) an event belongs to.

    Args:
        n_inputs: features per event (given by the task).
        classes: the nuisance's values, one class each; an event whose value is none of them is
            refused by :meth:`target_index`.
        hidden: hidden layer sizes (Learning to Pivot: 3 x 64).
        activation: ``relu``, ``tanh``, ``elu`` or ``silu``.
    """

    #: the target is a class label, used as it is (not standardised)
    continuous: ClassVar[bool] = False

    def __init__(
        self, n_inputs: int, classes: Sequence[float], hidden: Sequence[int] = (64, 64, 64), activation: str = "relu"
    ) -> None:
        super().__init__()
        classes = [float(c) for c in classes]
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise ConfigError(f"adversary classes must be at least two distinct values, but got {classes}")
        self.classes = classes
        self.register_buffer("class_values", torch.tensor(classes, dtype=torch.float32), persistent=False)
        self.mlp = _mlp(int(n_inputs), list(hidden), len(classes), activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)  # (B, n_classes) logits

    def target_index(self, values: Tensor) -> Tensor:
        """The class index of each value (B,) -> (B,) long; ConfigError for a value that is no class."""
        match = values.unsqueeze(-1) == self.class_values  # (B, n_classes)
        if not bool(match.any(dim=-1).all()):
            bad = sorted({float(v) for v in values[~match.any(dim=-1)].tolist()})[:5]
            raise ConfigError(f"adversary target values {bad} are none of the adversary classes {self.classes}")
        return match.float().argmax(dim=-1)

    def nll(self, x: Tensor, target: Tensor) -> Tensor:
        """Per-event cross-entropy (B,) of the target values (nuisance values, not indices)."""
        return F.cross_entropy(self(x), self.target_index(target), reduction="none")


class MixtureDensityAdversary(nn.Module):
    """A Gaussian mixture density network for a continuous (standardised) nuisance.

    Args:
        n_inputs: features per event (given by the task).
        components: Gaussians in the mixture (arXiv:1703.03507 used 20 for the jet mass).
        hidden: hidden layer sizes.
        activation: ``relu``, ``tanh``, ``elu`` or ``silu``.
        min_log_sigma: floor on log sigma, so that a component cannot collapse onto one event.
    """

    #: the target is standardised by the task (training background's mean and std)
    continuous: ClassVar[bool] = True

    def __init__(
        self,
        n_inputs: int,
        components: int = 5,
        hidden: Sequence[int] = (64, 64, 64),
        activation: str = "relu",
        min_log_sigma: float = -5.0,
    ) -> None:
        super().__init__()
        if isinstance(components, bool) or not isinstance(components, int) or components < 1:
            raise ConfigError(f"adversary components must be an integer >= 1, but got {components!r}")
        self.components = components
        self.min_log_sigma = float(min_log_sigma)
        self.mlp = _mlp(int(n_inputs), list(hidden), 3 * components, activation)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(logit_pi, mean, log_sigma)``, each (B, components)."""
        logit_pi, mean, log_sigma = self.mlp(x).chunk(3, dim=-1)
        return logit_pi, mean, log_sigma.clamp_min(self.min_log_sigma)

    def nll(self, x: Tensor, target: Tensor) -> Tensor:
        """Per-event negative log-likelihood (B,) of the (standardised) target."""
        return gaussian_mixture_nll(*self(x), target)
