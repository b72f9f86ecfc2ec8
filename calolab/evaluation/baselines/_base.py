"""The protocol every physics baseline follows, and the column checks they share.

A baseline is what a network is compared with on the same test events: a cut-based working
point, a BDT, a single observable. The evaluation builds the baselines an experiment lists in
``conf/evaluation/<name>.yaml``, reads the aux variables they declare, fits each on the
*training* split only and then asks it, on the test split, for a continuous discriminant
(:meth:`Baseline.score`, higher = more signal-like) and/or a working point
(:meth:`Baseline.passes`). ``name`` prefixes its metrics (``bdt`` -> ``test/bdt_auc``) and
``label`` is its legend text. Inputs are mappings ``{variable: (N,) array}`` (the aux branches).
"""

from __future__ import annotations

import abc
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Self

import numpy as np

from calolab.errors import ConfigError, suggest
from calolab.evaluation.metrics import _event_arrays

#: The cut-based photon-ID variables (arXiv:1606.01813), as in the aux branches: the photon default.
SHOWER_SHAPES: tuple[str, ...] = ("Rhad", "Reta", "Rphi", "weta2", "wstot", "ws3", "Eratio", "DeltaE", "fside")
#: Which side of a variable signal sits on.
DIRECTIONS = ("higher", "lower")
#: A metric prefix: it becomes part of ``test/<name>_auc`` (no ``/``, no spaces).
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class Baseline(abc.ABC):
    """A physics baseline: fitted on the training split, then scoring and/or cutting test events.

    Attributes:
        name: metric prefix, e.g. ``"bdt"`` -> ``test/bdt_auc``.
        label: legend text for plots.
        variables: the aux variables it reads, so that the evaluation can check them up front.
    """

    name: str
    label: str
    variables: tuple[str, ...]

    def __init__(self, variables: Sequence[str], *, name: str, label: str) -> None:
        if isinstance(variables, str) or len(variables) == 0 or len(set(variables)) != len(variables):
            raise ConfigError(f"variables must be a non-empty sequence of distinct names, but got {variables!r}")
        if not all(isinstance(v, str) and v for v in variables):
            raise ConfigError(f"variables must be names (non-empty strings), but got {list(variables)!r}")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(
                f"name must be a metric prefix of letters, digits, '_', '.' or '-' (it becomes test/<name>_auc), "
                f"but got name={name!r}"
            )
        if not isinstance(label, str) or not label:
            raise ConfigError(f"label must be a non-empty legend text, but got label={label!r}")
        self.variables = tuple(variables)
        self.name = name
        self.label = label
        self._fitted = False

    @abc.abstractmethod
    def fit(self, aux: Mapping[str, np.ndarray], label: np.ndarray, weight: np.ndarray | None = None) -> Self:
        """Fit on the training split only; returns ``self``."""

    def score(self, aux: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """(N,) continuous discriminant, higher = more signal-like; None if the baseline is only a working point.

        ``-inf`` marks events the baseline rejects outright (a missing value, outside a window):
        they rank below every other event, so a ROC curve stops where they start.
        """
        return None

    def passes(self, aux: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """(N,) bool working point; None if the baseline has no single working point."""
        return None

    def describe(self) -> dict[str, Any]:
        """What the fit learnt, for the evaluation's tables: strict JSON (no NaN or inf; None instead)."""
        return {"variables": list(self.variables)}

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise ConfigError(f"{type(self).__name__} must be fitted before use, but fit() has not been called")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, variables={list(self.variables)})"


def columns(aux: Mapping[str, np.ndarray], names: Sequence[str], *, finite: bool) -> np.ndarray:
    """Stack ``aux[name]`` for ``names`` into an (N, V) float64 array, checking keys, lengths and, if asked, finiteness."""
    cols: list[np.ndarray] = []
    for name in names:
        if name not in aux:
            raise ConfigError(
                f"variable {name!r} not in the aux variables given (keys {sorted(aux)}){suggest(name, aux)}"
            )
        col = np.asarray(aux[name], dtype=np.float64)
        if col.ndim != 1 or (cols and col.shape != cols[0].shape):
            raise ConfigError(
                f"variable {name!r}: expected a 1-d array of length {len(cols[0]) if cols else 'N'}, but got shape {col.shape}"
            )
        if finite and not np.all(np.isfinite(col)):
            raise ConfigError(
                f"variable {name!r}: expected finite values to fit on, but got {int(np.sum(~np.isfinite(col)))} NaN or inf"
            )
        cols.append(col)
    return np.stack(cols, axis=1)  # (N, V)


def training_arrays(
    aux: Mapping[str, np.ndarray], names: Sequence[str], label: np.ndarray, weight: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The training events: ``(x (N, V) finite, label (N,) bool, weight (N,))``, each checked."""
    x = columns(aux, names, finite=True)
    y, _, w = _event_arrays(label, x[:, 0], weight, score_name=names[0])
    return x, y, w


def check_direction(direction: str) -> float:
    """``+1`` for ``higher`` (signal above background), ``-1`` for ``lower``."""
    if direction not in DIRECTIONS:
        raise ConfigError(f"direction must be one of {list(DIRECTIONS)}, but got direction={direction!r}")
    return 1.0 if direction == "higher" else -1.0


def check_fraction(name: str, value: float) -> float:
    """``value`` in (0, 1] as a float, or a ConfigError naming ``name``."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if not 0.0 < x <= 1.0:
        raise ConfigError(f"{name} must be in (0, 1], but got {name}={value!r}")
    return x


def weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    order = np.argsort(x, kind="stable")
    cw = np.cumsum(w[order])
    return float(x[order][np.searchsorted(cw, 0.5 * cw[-1])])


def threshold_keeping(values: np.ndarray, weight: np.ndarray, fraction: float) -> float:
    """The cut ``value > t`` that keeps at least ``fraction`` of the weight, as tight as ties allow.

    ``t`` sits half-way between the last value kept and the next lower distinct value, so events
    tied on a value are kept or dropped together and the kept fraction exceeds ``fraction`` by at
    most the weight of one tied group; ``-inf`` when every event must be kept.
    """
    order = np.argsort(-values, kind="stable")
    v = values[order]  # descending
    cw = np.cumsum(weight[order])
    i = min(int(np.searchsorted(cw, fraction * cw[-1] * (1 - 1e-12), side="left")), v.size - 1)
    lower = v[v < v[i]]
    return -math.inf if lower.size == 0 else 0.5 * (float(v[i]) + float(lower.max()))


def json_number(x: float) -> float | None:
    """A float for strict JSON: NaN and inf become None."""
    x = float(x)
    return x if math.isfinite(x) else None
