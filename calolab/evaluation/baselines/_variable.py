"""One observable as the discriminant: the simplest physics baseline a tagger must beat.

The published jet taggers are compared with single observables: N-subjettiness tau21 for W
tagging (lower = W), constituent multiplicity and jet width for quark/gluon (lower = quark; the
multiplicity is the strongest single one, arXiv:1612.01551). :class:`Variable` turns one aux
variable into a score oriented so that higher is more signal-like.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, Self

import numpy as np

from calolab.evaluation.baselines._base import Baseline, check_direction, columns, json_number, training_arrays
from calolab.evaluation.metrics import auc

log = logging.getLogger(__name__)


class Variable(Baseline):
    """One aux variable as a discriminant, oriented so that higher = more signal-like.

    ``score`` is the value itself (``direction="higher"``) or its negative (``"lower"``); a
    missing value (NaN or inf) gets ``-inf``, below every event. There is no single working point
    (``passes`` is None): the evaluation reads the ROC curve of the score.

    Fitting learns nothing; it checks that the variable is there and finite on the training
    split, and records the training AUC (``train_auc``), logging a warning when it is below 0.5:
    the direction is then probably the wrong way round.

    Args:
        variable: the aux variable, e.g. ``jet_tau21``, ``jet_nconst``.
        direction: ``higher`` or ``lower``: where signal sits.
        name: metric prefix; default: the variable's name (``test/jet_tau21_auc``).
        label: legend text; default: the variable's name.
    """

    def __init__(self, variable: str, direction: str = "higher", name: str | None = None, label: str | None = None):
        self.sign = check_direction(direction)
        super().__init__(
            (variable,), name=variable if name is None else name, label=variable if label is None else label
        )
        self.variable = variable
        self.direction = direction
        self.train_auc = math.nan

    def _oriented(self, x: np.ndarray) -> np.ndarray:
        return np.where(np.isfinite(x), self.sign * x, -np.inf)

    def fit(self, aux: Mapping[str, np.ndarray], label: np.ndarray, weight: np.ndarray | None = None) -> Self:
        """Check the variable on the training split and record its training AUC."""
        x, y, w = training_arrays(aux, self.variables, label, weight)
        self.train_auc = auc(y, self._oriented(x[:, 0]), w)
        if self.train_auc < 0.5:
            log.warning(
                "baseline %s: %s with direction=%r separates worse than chance on the training split (AUC %.3f); "
                "is the direction the wrong way round?",
                self.name,
                self.variable,
                self.direction,
                self.train_auc,
            )
        self._fitted = True
        return self

    def score(self, aux: Mapping[str, np.ndarray]) -> np.ndarray:
        """(N,) the oriented value; ``-inf`` where it is missing."""
        self._check_fitted()
        return self._oriented(columns(aux, self.variables, finite=False)[:, 0])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "direction": self.direction, "train_auc": json_number(self.train_auc)}
