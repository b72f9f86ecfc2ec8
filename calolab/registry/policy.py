"""The promotion policy (``conf/registry/``): which metric decides, by how much, and the other gates.

:class:`GatePolicy` mirrors ``conf/registry/<name>.yaml`` key for key (nested sections are the
nested dataclasses) and checks every value where it enters, so that a bad override fails before
any model is restored or any alias is touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from calolab.errors import ConfigError, check_number, suggest
from calolab.evaluation.bootstrap import check_replicas

#: Metrics a promotion can be decided on; each is recomputed on the frozen test split.
METRICS = ("test/auc", "test/rej50", "test/rej80")
#: a generator's metric (conf/registry/generator.yaml): the Frechet distance of mass, pT and tau21
#: between generated and simulated test images, averaged over classes; lower is better
GENERATOR_METRICS = ("test/fpd",)
#: an energy regression's metric (conf/registry/regression.yaml): the relative resolution IQR/2 / median
#: of E_pred / E_true on the test split (RegressionEvaluation.frozen_metrics); lower is better
REGRESSION_METRICS = ("test/resolution",)
#: a pileup-denoising auto-encoder's metric (conf/registry/paed.yaml): the test MSE of the denoised
#: images over that of the raw pileup images, against the pileup-free ones; lower is better
DENOISER_METRICS = ("test/mse_ratio",)
MODES = ("max", "min")


@dataclass(frozen=True)
class ParityPolicy:
    """ONNX parity gate: onnxruntime vs the restored task's ``predict`` on test events.

    Args:
        atol, rtol: tolerances of ``np.allclose(onnx, torch)`` (see :func:`calolab.export.check_parity`);
            None: the candidate run's own export tolerances (``export.atol``/``export.rtol`` of its
            config), the ones its model was checked with when it was logged.
        events: at most this many test events are compared.
    """

    atol: float | None
    rtol: float | None
    events: int

    def __post_init__(self) -> None:
        for name in ("atol", "rtol"):
            if getattr(self, name) is not None:
                check_number(f"registry.parity.{name}", getattr(self, name))
        check_number("registry.parity.events", self.events, 1)

    def with_defaults(self, export: Mapping) -> ParityPolicy:
        """This policy with unset tolerances taken from a run's export config."""
        return ParityPolicy(
            atol=float(export["atol"]) if self.atol is None else self.atol,
            rtol=float(export["rtol"]) if self.rtol is None else self.rtol,
            events=self.events,
        )


@dataclass(frozen=True)
class LatencyPolicy:
    """CPU latency ceiling of the candidate's ONNX model (onnxruntime, batch 1, median of ``runs``).

    Args:
        max_ms: the ceiling in milliseconds; None disables the gate.
        runs: timed runs (the median is compared).
        warmup: untimed runs first (session start-up, allocations).
        threads: onnxruntime intra-op threads.
    """

    max_ms: float | None
    runs: int
    warmup: int
    threads: int

    def __post_init__(self) -> None:
        check_number("registry.latency.max_ms", self.max_ms, 0, allow_none=True)
        check_number("registry.latency.runs", self.runs, 1)
        check_number("registry.latency.warmup", self.warmup, 0)
        check_number("registry.latency.threads", self.threads, 1)


@dataclass(frozen=True)
class DecorrelationPolicy:
    """Decorrelation floor: 1/JSD between the background's ``variable`` passing and failing a cut.

    The measurement itself (scale, binning, signal efficiency of the cut) is the run's own
    evaluation's (``evaluation.decorrelation`` entry of that variable), so that the gate decides
    on exactly the figure logged as ``test/inv_jsd<eff>_<name>`` and quoted by the benchmarks.

    Args:
        min_inverse_jsd: the floor; None disables the gate.
        variable: the aux branch (e.g. ``mu`` for pileup, ``jet_m`` for jet mass); the candidate's
            evaluation must measure 1/JSD against it.
    """

    min_inverse_jsd: float | None
    variable: str

    def __post_init__(self) -> None:
        check_number("registry.decorrelation.min_inverse_jsd", self.min_inverse_jsd, 0, allow_none=True)
        if not isinstance(self.variable, str) or not self.variable:
            raise ConfigError(f"registry.decorrelation.variable must name an aux branch, but got {self.variable!r}")


@dataclass(frozen=True)
class GatePolicy:
    """Every gate of a promotion, and how the decision section is guarded.

    Args:
        metric: the metric the candidate must improve (one of :data:`METRICS`, or of
            :data:`GENERATOR_METRICS` for generators, :data:`REGRESSION_METRICS` for regressions,
            :data:`DENOISER_METRICS` for pileup-denoising auto-encoders).
        mode: ``max`` when higher is better, ``min`` when lower is better.
        min_improvement: the candidate must beat the champion by at least this much.
        min_improvement_sigma: None, or also by more than this many standard deviations of the
            difference on the same test events (paired bootstrap: the same replica weights for
            both models); a difference within it is refused as "not resolved".
        bootstrap_replicas, bootstrap_seed: the replicas of that paired bootstrap.
        parity, latency, decorrelation: the other gates.
        force_digest: accept a candidate whose dataset digest differs from the champion's.
        lock_timeout_s: how long to wait for a concurrent promotion of the same model.
    """

    metric: str
    mode: str
    min_improvement: float
    min_improvement_sigma: float | None
    bootstrap_replicas: int
    bootstrap_seed: int
    parity: ParityPolicy
    latency: LatencyPolicy
    decorrelation: DecorrelationPolicy
    force_digest: bool
    lock_timeout_s: float

    def __post_init__(self) -> None:
        known = METRICS + GENERATOR_METRICS + REGRESSION_METRICS + DENOISER_METRICS
        if self.metric not in known:
            raise ConfigError(
                f"registry.metric must be one of {', '.join(known)}, but got metric={self.metric!r}"
                f"{suggest(str(self.metric), known)}"
            )
        if self.mode not in MODES:
            raise ConfigError(f"registry.mode must be 'max' or 'min', but got mode={self.mode!r}")
        check_number("registry.min_improvement", self.min_improvement)
        check_number("registry.min_improvement_sigma", self.min_improvement_sigma, 0, allow_none=True)
        check_replicas(self.bootstrap_replicas, "registry.bootstrap_replicas")
        if isinstance(self.bootstrap_seed, bool) or not isinstance(self.bootstrap_seed, int) or self.bootstrap_seed < 0:
            raise ConfigError(f"registry.bootstrap_seed must be an integer >= 0, but got {self.bootstrap_seed!r}")
        if not isinstance(self.force_digest, bool):
            raise ConfigError(f"registry.force_digest must be true or false, but got {self.force_digest!r}")
        check_number("registry.lock_timeout_s", self.lock_timeout_s, 0)

    @classmethod
    def from_config(cls, cfg: DictConfig | Mapping) -> GatePolicy:
        """Build from ``cfg.registry``; unknown or missing keys are reported with the known ones."""
        plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
        sections = {"parity": ParityPolicy, "latency": LatencyPolicy, "decorrelation": DecorrelationPolicy}
        kwargs = _check_keys("registry", plain, cls)
        for key, klass in sections.items():
            kwargs[key] = klass(**_check_keys(f"registry.{key}", kwargs[key], klass))
        return cls(**kwargs)

    def improvement(self, candidate: float, champion: float) -> float:
        """How much better ``candidate`` is than ``champion`` (positive = better)."""
        return candidate - champion if self.mode == "max" else champion - candidate


def _check_keys(where: str, value: Any, klass: type) -> dict[str, Any]:
    fields = list(klass.__dataclass_fields__)
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping with keys {fields}, but got {value!r}")
    unknown = [k for k in value if k not in fields]
    missing = [k for k in fields if k not in value]
    if unknown:
        raise ConfigError(
            f"unknown key {where}.{unknown[0]}{suggest(str(unknown[0]), fields)} (keys: {', '.join(fields)})"
        )
    if missing:
        raise ConfigError(f"{where} lacks the key(s) {', '.join(missing)}")
    return dict(value)
