"""Search spaces: ``hydra.sweeper.params`` -> Optuna distributions, validated before any trial.

Each entry maps a config path to a spec: ``{type: float, low, high, log, step}``,
``{type: int, low, high, log, step}`` or ``{type: categorical, choices: [...]}``; a plain list
is shorthand for a categorical. As in the stock Hydra Optuna sweeper, a spec may also be a string
in Hydra's sweep grammar, and the same grammar on the command line adds or replaces dimensions:

    choice(32, 64, 128)  or  32,64,128      categorical
    range(1, 5)  range(0.1, 0.5, 0.1)       int / stepped float over the values Hydra's range
                                            yields (stop excluded, as in Hydra)
    interval(0.0, 0.3)                      float
    tag(log, interval(1e-5, 1e-2))          log-float

A plain command-line override of a path in the space fixes it (``net.dropout=0.1``).

Conditional dimensions (Optuna's define-by-run): ``when: {<earlier path>: <value or list>}`` samples
a dimension only in trials where that earlier categorical dimension took one of those values; a
path written ``+model.optimizer.momentum`` adds a key the config does not have. Every path
must exist in the composed config (or be a config group) and every range must be non-empty, so
that a typo fails before the first trial rather than after the tenth.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from calolab.errors import ConfigError, check_number, suggest

TYPES = ("float", "int", "categorical")
_MISSING = object()


def _check_path(path: str, config: DictConfig | None, *, added: bool = False) -> None:
    if config is None:
        return
    if added:  # a new key: its parent must exist, the key itself must not
        parent = path.rpartition(".")[0]
        if parent:
            _check_path(parent, config)
        if OmegaConf.select(config, path, default=_MISSING, throw_on_missing=False) is not _MISSING:
            raise ConfigError(f"hydra.sweeper.params.+{path}: the config already has {path!r}; drop the '+'")
        return
    value = OmegaConf.select(config, path, default=_MISSING, throw_on_missing=False, throw_on_resolution_failure=False)
    if value is _MISSING and path in (OmegaConf.select(config, "hydra.runtime.choices", default=None) or {}):
        return  # a config group: `net=a,b` chooses between its options
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
    return check_number(f"hydra.sweeper.params.{path}.{key}", spec[key])


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


def _choice(value: Any) -> Any:
    """A categorical choice as Optuna stores it: lists and mappings as their Hydra text."""
    return Transformer.encode(value) if isinstance(value, (list, dict)) else value


def sweep_spec(parsed: Override) -> Any:
    """A sweep override (``choice``, ``range``, ``interval``, ``tag(log, ...)``) as a spec for
    :func:`parse_param`; a plain override gives None."""
    where = f"{parsed.input_line!r}"
    if parsed.is_choice_sweep() or (parsed.is_range_sweep() and parsed.value().shuffle):
        return {"type": "categorical", "choices": [_choice(v) for v in parsed.sweep_iterator()]}
    if parsed.is_range_sweep():
        values, sweep = list(parsed.sweep_iterator()), parsed.value()
        if len(values) < 2:
            raise ConfigError(f"{where}: a range to search needs at least two values, but it yields {values}")
        if all(isinstance(v, int) for v in values):
            return {"type": "int", "low": values[0], "high": values[-1], "step": int(sweep.step)}
        return {"type": "float", "low": float(values[0]), "high": float(values[-1]), "step": float(sweep.step)}
    if parsed.is_interval_sweep():
        sweep = parsed.value()
        unknown = set(sweep.tags) - {"log"}
        if unknown:
            raise ConfigError(f"{where}: the only tag an interval takes is 'log', but got {sorted(unknown)}")
        return {"type": "float", "low": sweep.start, "high": sweep.end, "log": "log" in sweep.tags}
    if parsed.is_sweep_override():
        raise ConfigError(f"{where}: not a search dimension (use choice, range, interval or tag(log, interval))")
    return None


def _parse_override(text: str) -> Override:
    try:
        return OverridesParser.create().parse_override(text)
    except HydraException as err:
        raise ConfigError(f"hydra.sweeper.params: cannot parse {text!r}: {err}") from err


class SearchSpace(dict):
    """``{config path: distribution}`` in the order of ``hydra.sweeper.params``, with the
    conditions of conditional dimensions; :meth:`sample` draws one trial's parameters."""

    def __init__(self, dims: dict[str, BaseDistribution], conditions: dict[str, dict[str, tuple]], added: set[str]):
        super().__init__(dims)
        self.conditions, self.added = conditions, added

    def active(self, path: str, params: Mapping[str, Any]) -> bool:
        return all(params.get(other) in values for other, values in self.conditions.get(path, {}).items())

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """Suggest every active dimension in order (public Optuna API, so that queued trials
        get their fixed parameters back)."""
        params: dict[str, Any] = {}
        for path, dist in self.items():
            if not self.active(path, params):
                continue
            if isinstance(dist, CategoricalDistribution):
                params[path] = trial.suggest_categorical(path, dist.choices)
            elif isinstance(dist, IntDistribution):
                params[path] = trial.suggest_int(path, dist.low, dist.high, step=dist.step, log=dist.log)
            else:
                params[path] = trial.suggest_float(path, dist.low, dist.high, step=dist.step, log=dist.log)
        return params

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """Hydra overrides for a trial's sampled parameters (``+`` for added keys)."""
        return [("+" if path in self.added else "") + override(path, params[path]) for path in self if path in params]


def _conditions(path: str, when: Any, earlier: Mapping[str, BaseDistribution]) -> dict[str, tuple]:
    if not isinstance(when, Mapping) or not when:
        raise ConfigError(
            f"hydra.sweeper.params.{path}: when must map an earlier categorical dimension to its value(s), "
            f"but got when={when!r}"
        )
    conditions = {}
    for other, values in when.items():
        other = str(other).lstrip("+")
        dist = earlier.get(other)
        if not isinstance(dist, CategoricalDistribution):
            raise ConfigError(
                f"hydra.sweeper.params.{path}: when names {other!r}, which must be a categorical dimension listed "
                f"before it; categorical dimensions before it: {[k for k, d in earlier.items() if isinstance(d, CategoricalDistribution)]}"
            )
        values = tuple(values) if isinstance(values, (list, tuple)) else (values,)
        unknown = [v for v in values if v not in dist.choices]
        if unknown:
            raise ConfigError(
                f"hydra.sweeper.params.{path}: when {other}={unknown[0]!r} is not one of its choices {list(dist.choices)}"
            )
        conditions[other] = values
    return conditions


def parse_space(
    params: Mapping[str, Any] | None, config: DictConfig | None = None, arguments: Sequence[str] = ()
) -> SearchSpace:
    """``hydra.sweeper.params`` and the command line's sweep overrides as a :class:`SearchSpace`;
    a plain command-line override of a path drops it from the space. Paths are checked against
    ``config``."""
    specs: dict[str, Any] = {}
    added: set[str] = set()
    for path, spec in (params or {}).items():
        path = str(path)
        if path.startswith("+"):
            path = path.lstrip("+")
            added.add(path)
        if OmegaConf.is_config(spec):
            spec = OmegaConf.to_container(spec, resolve=True)
        if isinstance(spec, str):
            spec = sweep_spec(_parse_override(f"{path}={spec}"))
            if spec is None:
                raise ConfigError(
                    f"hydra.sweeper.params.{path}: expected a search dimension such as "
                    f"'interval(0.0, 0.3)' or 'choice(32, 64)', but got {params[path]!r}"
                )
        specs[path] = spec
    for parsed in OverridesParser.create().parse_overrides(list(arguments)):
        path = parsed.get_key_element().lstrip("+~")
        spec = sweep_spec(parsed)
        if spec is not None:
            when = specs[path].get("when") if isinstance(specs.get(path), Mapping) else None
            specs[path] = {**spec, "when": when} if when else spec
        elif path in specs and not parsed.is_delete():
            del specs[path]  # fixed on the command line (a deleted key stays, and fails the path check)
    if not specs:
        raise ConfigError("hydra.sweeper.params is empty: a sweep needs at least one parameter to search")
    dims: dict[str, BaseDistribution] = {}
    conditions: dict[str, dict[str, tuple]] = {}
    for path, spec in specs.items():
        when = spec.get("when") if isinstance(spec, Mapping) else None
        if when is not None:
            conditions[path] = _conditions(path, when, dims)
            spec = {k: v for k, v in spec.items() if k != "when"}
        dims[path] = parse_param(path, spec)
        _check_path(path, config, added=path in added)
    return SearchSpace(dims, conditions, added)


def fixed_overrides(arguments: Sequence[str]) -> list[str]:
    """The command line's overrides without its sweep overrides (those are search dimensions):
    what every trial gets besides its sampled parameters."""
    return [
        a for a, p in zip(arguments, OverridesParser.create().parse_overrides(list(arguments))) if sweep_spec(p) is None
    ]


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
