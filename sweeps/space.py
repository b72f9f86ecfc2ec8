"""Search spaces: ``hydra.sweeper.params`` -> Optuna distributions, validated before any trial.

Each entry maps a config path to a spec: ``{type: float, low, high, log, step}``,
``{type: int, low, high, log, step}`` or ``{type: categorical, choices: [...]}``; a plain list
is shorthand for a categorical. Every path must exist in the composed config and every range
must be non-empty, so that a typo fails before the first trial rather than after the tenth.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from calolab.errors import ConfigError, suggest

TYPES = ("float", "int", "categorical")
_MISSING = object()


def _check_path(path: str, config: DictConfig | None) -> None:
    if config is None:
        return
    value = OmegaConf.select(config, path, default=_MISSING, throw_on_missing=False, throw_on_resolution_failure=False)
    if value is _MISSING:
        parent, _, leaf = path.rpartition(".")
        node = OmegaConf.select(config, parent, default=None) if parent else config
        siblings = [f"{parent}.{k}" if parent else str(k) for k in node] if isinstance(node, DictConfig) else []
        raise ConfigError(
            f"hydra.sweeper.params: unknown parameter path {path!r}{suggest(path, siblings)}"
            + (f" (keys under {parent!r}: {', '.join(str(k) for k in node)})" if isinstance(node, DictConfig) else "")
        )


def _number(path: str, spec: Mapping[str, Any], key: str) -> float:
    if key not in spec:
        raise ConfigError(f"hydra.sweeper.params.{path}: {key!r} is required, but got {dict(spec)}")
    value = spec[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"hydra.sweeper.params.{path}: {key} must be a finite number, but got {key}={value!r}")
    return value


def parse_param(path: str, spec: Any) -> BaseDistribution:
    """One search dimension as an Optuna distribution; raises ConfigError on a bad spec."""
    if isinstance(spec, (list, tuple)):
        spec = {"type": "categorical", "choices": list(spec)}
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"hydra.sweeper.params.{path}: expected a mapping like {{type: float, low: 1e-4, high: 1e-2}} "
            f"or a list of choices, but got {spec!r}"
        )
    kind = spec.get("type")
    if kind not in TYPES:
        raise ConfigError(f"hydra.sweeper.params.{path}: type must be one of {', '.join(TYPES)}, but got type={kind!r}")
    if kind == "categorical":
        choices = list(spec.get("choices") or [])
        if not choices:
            raise ConfigError(f"hydra.sweeper.params.{path}: choices must be a non-empty list, but got {choices!r}")
        return CategoricalDistribution(choices)
    low, high = _number(path, spec, "low"), _number(path, spec, "high")
    log, step = bool(spec.get("log", False)), spec.get("step")
    if not low < high:
        what = "empty" if low == high else "inverted"
        raise ConfigError(
            f"hydra.sweeper.params.{path}: {what} range, low must be below high, but got low={low}, high={high}"
        )
    if log and low <= 0:
        raise ConfigError(f"hydra.sweeper.params.{path}: a log range must be positive, but got low={low}")
    if log and step is not None:
        raise ConfigError(f"hydra.sweeper.params.{path}: log and step cannot be combined, but got step={step}")
    if kind == "int":
        if int(low) != low or int(high) != high:
            raise ConfigError(
                f"hydra.sweeper.params.{path}: an int range needs integer bounds, but got low={low}, high={high}"
            )
        return IntDistribution(int(low), int(high), log=log, step=int(step or 1))
    return FloatDistribution(float(low), float(high), log=log, step=None if step is None else float(step))


def parse_space(params: Mapping[str, Any] | None, config: DictConfig | None = None) -> dict[str, BaseDistribution]:
    """``hydra.sweeper.params`` as ``{config path: distribution}``; checks paths against ``config``."""
    if not params:
        raise ConfigError("hydra.sweeper.params is empty: a sweep needs at least one parameter to search")
    space = {}
    for path, spec in params.items():
        path = str(path)
        if OmegaConf.is_config(spec):
            spec = OmegaConf.to_container(spec, resolve=True)
        space[path] = parse_param(path, spec)
        _check_path(path, config)
    return space


def override(path: str, value: Any) -> str:
    """A Hydra override that sets ``path`` to a sampled ``value``."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float)):
        text = repr(value)
    elif value is None:
        text = "null"
    elif isinstance(value, str) and value[:1] + value[-1:] in ("[]", "{}"):
        text = value  # a list or mapping choice, kept as a string for Optuna: passed to Hydra as is
    else:
        text = "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"
    return f"{path}={text}"
