"""Gradient-boosted decision trees on a list of aux variables: the multivariate physics baseline.

:class:`BDT` is scikit-learn's ``HistGradientBoostingClassifier`` on any variables (jet mass,
tau21, pT, eta and multiplicity for a W tagger; multiplicity, width and pT for quark/gluon);
:class:`ShowerShapeBDT` is its photon-ID configuration on the shower shapes, optionally with the
photon's pT and |eta|. A BDT is a discriminant (``score``), with no working point of its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Self

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from calolab.errors import ConfigError
from calolab.evaluation.baselines._base import SHOWER_SHAPES, Baseline, columns, training_arrays

#: Below this many training events the BDT runs on one thread (see :class:`BDT`).
BDT_SMALL_FIT = 50_000


class BDT(Baseline):
    """Gradient-boosted trees (sklearn ``HistGradientBoostingClassifier``) on the given aux variables.

    Early stopping on the weighted validation loss of an internal, stratified
    ``validation_fraction`` of the training events; ``random_state`` fixes that split and the
    trees, so fits are reproducible. Training values must be finite; at scoring time NaN is
    allowed (the trees send it down their learnt missing-value branch).

    ``n_threads`` caps the OpenMP threads of fit and score; ``None`` means one thread for fits on
    fewer than ``BDT_SMALL_FIT`` events and all cores above. Small fits gain nothing from threads,
    and when another process holds a core OpenMP's spinning barriers make them many times slower
    (measured here: 20 s instead of 1.5 s for 1,500 events on two shared cores).

    Args:
        variables: the aux variables, the BDT's inputs in this order.
        absolute: those of ``variables`` taken as absolute values (eta: the detector is symmetric).
        name: metric prefix (``test/<name>_auc``).
        label: legend text.
        max_iter, learning_rate, random_state, validation_fraction, n_iter_no_change: of
            ``HistGradientBoostingClassifier``.
        n_threads: OpenMP threads, or None (see above).

    Attributes (after :meth:`fit`):
        model: the fitted classifier (``model.n_iter_``: the boosting iterations kept).
    """

    def __init__(
        self,
        variables: Sequence[str],
        absolute: Sequence[str] = (),
        name: str = "bdt",
        label: str = "BDT",
        max_iter: int = 200,
        learning_rate: float = 0.1,
        random_state: int = 0,
        validation_fraction: float = 0.2,
        n_iter_no_change: int = 10,
        n_threads: int | None = None,
    ):
        super().__init__(variables, name=name, label=label)
        if isinstance(absolute, str) or not set(absolute) <= set(self.variables):
            raise ConfigError(f"absolute must list some of the variables {list(self.variables)}, but got {absolute!r}")
        if not 0.0 < validation_fraction < 1.0:
            raise ConfigError(f"validation_fraction must be in (0, 1), but got {validation_fraction!r}")
        if n_threads is not None and n_threads < 1:
            raise ConfigError(f"n_threads must be >= 1 or None, but got n_threads={n_threads!r}")
        self.absolute = tuple(absolute)
        self._abs = np.array([v in self.absolute for v in self.variables])
        self.n_threads = n_threads
        self._threads: int | None = n_threads
        self.model = HistGradientBoostingClassifier(
            max_iter=max_iter,
            learning_rate=learning_rate,
            early_stopping=True,
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change,
            random_state=random_state,
        )

    def _features(self, x: np.ndarray) -> np.ndarray:
        x[:, self._abs] = np.abs(x[:, self._abs])  # (N, V)
        return x

    def fit(self, aux: Mapping[str, np.ndarray], label: np.ndarray, weight: np.ndarray | None = None) -> Self:
        """Train on the training events (weighted), stopping early on the internal validation set."""
        x, y, w = training_arrays(aux, self.variables, label, weight)
        if self.n_threads is None:
            self._threads = 1 if len(y) < BDT_SMALL_FIT else None
        with self._thread_limit():
            self.model.fit(self._features(x), y.astype(np.int64), sample_weight=w)
        self._fitted = True
        return self

    def _thread_limit(self) -> AbstractContextManager:
        return nullcontext() if self._threads is None else threadpool_limits(limits=self._threads, user_api="openmp")

    def score(self, aux: Mapping[str, np.ndarray]) -> np.ndarray:
        """(N,) signal probability in [0, 1]."""
        self._check_fitted()
        x = self._features(columns(aux, self.variables, finite=False))
        with self._thread_limit():
            return self.model.predict_proba(x)[:, 1]

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "absolute": list(self.absolute),
            "iterations": int(self.model.n_iter_) if self._fitted else None,
        }


class ShowerShapeBDT(BDT):
    """The photon-ID BDT: :class:`BDT` on the shower shapes, optionally with the photon's kinematics.

    With ``kinematics=True`` ``ph_pt`` and ``|ph_eta|`` are added to the inputs (the trees can
    then learn the pT and eta dependence of the shapes). Other arguments as :class:`BDT`.
    """

    def __init__(
        self,
        variables: Sequence[str] = SHOWER_SHAPES,
        max_iter: int = 200,
        learning_rate: float = 0.1,
        random_state: int = 0,
        validation_fraction: float = 0.2,
        n_iter_no_change: int = 10,
        kinematics: bool = False,
        n_threads: int | None = None,
        name: str = "bdt",
        label: str = "Shower-shape BDT",
    ):
        if isinstance(variables, str):
            raise ConfigError(f"variables must be a non-empty sequence of distinct names, but got {variables!r}")
        extra = ("ph_pt", "ph_eta") if kinematics else ()
        super().__init__(
            (*variables, *extra),
            absolute=("ph_eta",) if kinematics else (),
            name=name,
            label=label,
            max_iter=max_iter,
            learning_rate=learning_rate,
            random_state=random_state,
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change,
            n_threads=n_threads,
        )
        self.kinematics = bool(kinematics)
