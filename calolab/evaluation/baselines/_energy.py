"""Energy baselines of cluster calibration: the EM scale and a local-hadronic-style weighting.

A regression network is compared with what ATLAS does without one (Cukierman et al.): the
cluster's energy at the EM scale (:class:`EMScaleEnergy`: no correction) and the local hadronic
calibration's idea in its simplest form (:class:`LocalHadronicWeighting`): classify the cluster
as electromagnetic or hadronic with the EM probability (a
:class:`~calolab.evaluation.baselines.ProjectiveLikelihood` on cluster moments, pi0 = EM) and
weight the EM-scale energy with a calibration constant per class,
``E = E_EM x (p c_EM + (1 - p) c_had)``, the constants being the median truth / EM-scale ratios of
the training clusters classified EM (p > 0.5) and hadronic. Both are fitted on the training split
only and give energies (MeV) through :meth:`energy`; ``name`` prefixes their metrics
(``test/<name>_resolution``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Self

import numpy as np

from calolab.errors import ConfigError
from calolab.evaluation.baselines._base import _NAME, columns, json_number
from calolab.evaluation.baselines._likelihood import ProjectiveLikelihood


class EnergyBaseline:
    """An energy estimate a regression is compared with: ``fit`` on the training split, then ``energy``."""

    def __init__(self, *, name: str, label: str, energy: str) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(
                f"name must be a metric prefix of letters, digits, '_', '.' or '-', but got name={name!r}"
            )
        if not isinstance(energy, str) or not energy:
            raise ConfigError(f"energy must name the EM-scale energy aux variable, but got energy={energy!r}")
        self.name, self.label, self.energy_variable = name, str(label), energy
        self._fitted = False

    @property
    def variables(self) -> tuple[str, ...]:
        return (self.energy_variable,)

    def fit(self, aux: Mapping[str, np.ndarray], label: np.ndarray, truth: np.ndarray) -> Self:
        self._fitted = True
        return self

    def energy(self, aux: Mapping[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"variables": list(self.variables)}


class EMScaleEnergy(EnergyBaseline):
    """The cluster's EM-scale energy as it is (no calibration)."""

    def __init__(self, energy: str = "cluster_e", name: str = "em_scale", label: str = "EM scale") -> None:
        super().__init__(name=name, label=label, energy=energy)

    def energy(self, aux: Mapping[str, np.ndarray]) -> np.ndarray:
        return columns(aux, self.variables, finite=False)[:, 0]


class LocalHadronicWeighting(EnergyBaseline):
    """EM probability x one calibration constant per class (see the module docstring).

    Args:
        variables: the cluster moments of the EM probability.
        energy: the EM-scale energy aux variable (MeV); also the likelihood's condition.
        condition_bins, bins: of the :class:`ProjectiveLikelihood`.
        name, label: metric prefix and legend text.
    """

    def __init__(
        self,
        variables: Sequence[str],
        energy: str = "cluster_e",
        condition_bins: int = 6,
        bins: int = 20,
        name: str = "lcw",
        label: str = "EM prob. x constant per class",
    ) -> None:
        super().__init__(name=name, label=label, energy=energy)
        self.classifier = ProjectiveLikelihood(
            variables, condition=energy, condition_bins=condition_bins, bins=bins, name=f"{name}_em_prob"
        )
        self.c_em = math.nan
        self.c_had = math.nan

    @property
    def variables(self) -> tuple[str, ...]:
        return (self.energy_variable, *self.classifier.variables)

    def fit(self, aux: Mapping[str, np.ndarray], label: np.ndarray, truth: np.ndarray) -> Self:
        """Fit the EM probability (label 1 = pi0 = EM) and the two constants on the training split."""
        self.classifier.fit(aux, label)
        p = self.classifier.score(aux)
        ratio = np.asarray(truth, np.float64) / np.maximum(self.energy_variable_values(aux), 1.0)
        em = p > 0.5
        if not em.any() or em.all():
            raise ConfigError(
                f"{self.name}: the EM probability classifies all {len(p)} training clusters as one class; "
                "it needs both EM and hadronic clusters to fit a constant per class"
            )
        self.c_em, self.c_had = float(np.median(ratio[em])), float(np.median(ratio[~em]))
        self._fitted = True
        return self

    def energy_variable_values(self, aux: Mapping[str, np.ndarray]) -> np.ndarray:
        return columns(aux, (self.energy_variable,), finite=False)[:, 0]

    def energy(self, aux: Mapping[str, np.ndarray]) -> np.ndarray:
        if not self._fitted:
            raise ConfigError(f"{type(self).__name__} must be fitted before use, but fit() has not been called")
        p = self.classifier.score(aux)
        return self.energy_variable_values(aux) * (p * self.c_em + (1.0 - p) * self.c_had)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "c_em": json_number(self.c_em),
            "c_had": json_number(self.c_had),
            "em_probability": self.classifier.describe(),
        }
