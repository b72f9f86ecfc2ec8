"""The promotion gates; each returns a :class:`GateResult` (pass, fail or skip, with the numbers).

- ``dataset``: candidate and champion were scored on the same frozen test set (same dataset
  digest); a mismatch is refused as bad input unless forced, and a forced one is recorded.
- ``metric``: the candidate beats the champion on the configured metric by at least
  ``min_improvement`` (both recomputed on the same events) and, with ``min_improvement_sigma``,
  by more than that many standard deviations of the difference (paired bootstrap over the same
  test events when the scores are given, else the two models' own errors in quadrature, which
  overstates the spread of correlated models); a difference within it is "not resolved". A
  rejection that either model only bounds (no background passing) is never compared as a
  number: the gate says "not resolved" and decides on ``test/auc``. The champion never passes.
- ``parity``: the registered ONNX file scores the test events as the restored PyTorch net does
  (:func:`calolab.export.check_parity`, onnxruntime at several batch sizes).
- ``latency`` (optional): median onnxruntime CPU latency at batch 1 under a ceiling.
- ``decorrelation`` (optional): 1/JSD of the background's ``variable`` distribution passing vs
  failing the candidate's cut, above a floor, measured with the run's evaluation's definition of
  it (binning, scale, cut efficiency), i.e. the run's ``test/inv_jsd50_<name>`` on the test events.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calolab.errors import CalolabError, ConfigError
from calolab.evaluation import uncertainty as U
from calolab.evaluation.bootstrap import bootstrap, paired_difference
from calolab.evaluation.decorrelation import DecorrelationSpec, inverse_jsd
from calolab.registry.errors import DigestMismatchError
from calolab.registry.policy import DecorrelationPolicy, GatePolicy, LatencyPolicy, ParityPolicy

PASS, FAIL, SKIP = "pass", "fail", "skip"


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict; ``detail`` holds the numbers it was decided on."""

    name: str
    status: str
    detail: str

    @property
    def passed(self) -> bool:
        """Whether the gate lets the candidate through (a skipped gate does)."""
        return self.status != FAIL

    def tag_value(self) -> str:
        return f"{self.status}: {self.detail}"


def dataset_gate(
    candidate_digest: str, champion_digest: str | None, champion_version: str | None, force: bool
) -> GateResult:
    """Same frozen test set, or a forced comparison; raises DigestMismatchError otherwise."""
    if champion_digest is None:
        return GateResult("dataset", PASS, f"no champion to compare with; test set digest {candidate_digest[:16]}")
    if candidate_digest == champion_digest:
        return GateResult(
            "dataset", PASS, f"same frozen test set as champion v{champion_version} (digest {candidate_digest[:16]})"
        )
    message = (
        f"dataset digest {candidate_digest[:16]} of the candidate differs from {champion_digest[:16]} of "
        f"champion v{champion_version}: they were not evaluated on the same frozen test set"
    )
    if not force:
        raise DigestMismatchError(f"{message} (force=true compares them anyway, each on its own test split)")
    return GateResult("dataset", PASS, f"forced: {message}; each model scored on its own test split")


#: the metric a gate falls back on when the configured one is a bound for either model
RESOLVED_FALLBACK = "test/auc"


def paired_comparisons(
    label: np.ndarray,
    candidate_score: np.ndarray,
    champion_score: np.ndarray,
    weight: np.ndarray | None = None,
    *,
    replicas: int = 1000,
    seed: int = 0,
) -> dict[str, U.Comparison]:
    """Candidate minus champion of each promotion metric on the same events, by a paired bootstrap.

    Both models' figures come from the same replica weights, so the spread of the difference
    accounts for their correlation; a rejection unresolved in more than 5% of the replicas (no
    background passing) gives a comparison marked as a bound. ``replicas``/``seed``: the
    policy's ``bootstrap_replicas``/``bootstrap_seed``.
    """
    from calolab.evaluation.metrics import auc, rejection_at_efficiency

    y = np.asarray(label)
    w = None if weight is None else np.asarray(weight, dtype=np.float64)
    reps = bootstrap(
        y,
        {"candidate": candidate_score, "champion": champion_score},
        w,
        replicas=replicas,
        seed=seed,
    )
    n_sig = U.effective_count(np.ones(int(y.sum())) if w is None else w[y == 1])
    n_bkg = U.effective_count(np.ones(int((y == 0).sum())) if w is None else w[y == 0])
    out = {}
    for key, read in (
        ("test/auc", lambda s: auc(y, s, w)),
        ("test/rej50", lambda s: rejection_at_efficiency(y, s, 0.5, w)),
        ("test/rej80", lambda s: rejection_at_efficiency(y, s, 0.8, w)),
    ):
        name = key.removeprefix("test/")
        unresolved, err = paired_difference(reps["candidate"][name], reps["champion"][name])
        diff = read(candidate_score) - read(champion_score)
        out[key] = U.Comparison(
            "candidate", "champion", key, diff, err, n_sig, n_bkg, bound=unresolved > U.UNRESOLVED_FRACTION
        )
    return out


def _is_bound(metrics: Mapping[str, float], key: str) -> bool:
    return metrics.get(key + U.IS_BOUND, 0.0) >= 0.5


def _own_error(metrics: Mapping[str, float], key: str) -> float:
    """A model's own standard deviation of ``key`` (NaN when none was computed)."""
    if key + U.ERR in metrics:
        return float(metrics[key + U.ERR])
    if key + U.ERR_LO in metrics and key + U.ERR_HI in metrics:
        return 0.5 * float(metrics[key + U.ERR_LO] + metrics[key + U.ERR_HI])
    return math.nan


def metric_gate(
    policy: GatePolicy,
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    champion_version: str | None,
    candidate_is_champion: bool,
    paired: Mapping[str, U.Comparison] | None = None,
) -> GateResult:
    """The candidate must improve ``policy.metric`` by at least ``policy.min_improvement``.

    Args:
        paired: metric -> candidate-vs-champion :class:`~calolab.evaluation.uncertainty.Comparison`
            on the same events (:func:`paired_comparisons`); used for ``min_improvement_sigma``.
    """
    m = policy.metric
    if m not in candidate:  # e.g. the generator policy (test/fpd) on a classifier, or the reverse
        from calolab.errors import suggest

        raise ConfigError(
            f"registry.metric={m!r} is not a metric of this model's evaluation{suggest(m, candidate)} "
            f"(it has {', '.join(k for k in candidate if not k.endswith(('_err', '_err_lo', '_err_hi', '_is_bound')))}); "
            "generators are promoted with registry=generator"
        )
    value = candidate[m]
    if candidate_is_champion:
        return GateResult(
            "metric", FAIL, f"not better than champion: it is the champion (v{champion_version}, {m} {value:.6g})"
        )
    if champion is None:
        return GateResult("metric", PASS, f"{m} {U.format_metric(candidate, m)}; no champion yet (first promotion)")
    prefix = ""
    if _is_bound(candidate, m) or _is_bound(champion, m) or (paired and m in paired and paired[m].bound):
        prefix = (
            f"{m} candidate {U.format_metric(candidate, m)} vs champion v{champion_version} "
            f"{U.format_metric(champion, m)}: not resolved (a bound is not a number to compare); "
        )
        fallback = RESOLVED_FALLBACK
        if m == fallback or fallback not in candidate or fallback not in champion:
            return GateResult("metric", FAIL, prefix + "no resolved metric to decide on")
        prefix += f"decided on {fallback}: "
        m = fallback
    gain = policy.improvement(candidate[m], champion[m])
    ok = gain >= policy.min_improvement
    text = (
        f"{m} {candidate[m]:.6g} vs champion v{champion_version} {champion[m]:.6g} ({policy.mode}): "
        f"improvement {gain:+.6g} {'>=' if ok else '<'} {policy.min_improvement:g}"
    )
    k = policy.min_improvement_sigma
    if k is not None:
        if paired and m in paired:
            err, how = paired[m].err, "paired bootstrap on the same test events"
        else:
            err, how = math.hypot(_own_error(candidate, m), _own_error(champion, m)), "both models' own errors"
        if not math.isfinite(err):
            return GateResult("metric", FAIL, prefix + text + f"; not resolved: no uncertainty of {m} to compare with")
        resolved = gain > k * err
        text += (
            f"; {gain:+.3g} +- {err:.2g} ({how}) {'>' if resolved else '<='} {k:g} sigma: "
            f"{'resolved' if resolved else 'not resolved'}"
        )
        ok = ok and resolved
    return GateResult("metric", PASS if ok else FAIL, prefix + text)


def parity_gate(onnx_path: Path, reference, inputs: list[np.ndarray], policy: ParityPolicy) -> GateResult:
    """onnxruntime vs PyTorch on the first ``policy.events`` test events.

    ``reference`` is PyTorch's side as :func:`calolab.export.check_parity` takes it: the task's
    ``predict`` on arrays (the promotion passes it) or its inference module.
    """
    from calolab.export.onnx import check_parity

    n = min(policy.events, len(inputs[0]))
    arrays = [np.ascontiguousarray(a[:n]) for a in inputs]
    try:
        diff = check_parity(onnx_path, reference, arrays, atol=policy.atol, rtol=policy.rtol)
    except CalolabError as err:  # ExportError (mismatch) or InputFileError (unloadable file)
        return GateResult("parity", FAIL, str(err))
    return GateResult(
        "parity", PASS, f"max |onnx - torch| = {diff:.3g} on {n} events (atol {policy.atol:g}, rtol {policy.rtol:g})"
    )


def measure_latency_ms(onnx_path: Path, inputs: dict[str, np.ndarray], policy: LatencyPolicy) -> float:
    """Median wall time (ms) of one onnxruntime CPU call on one event."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = policy.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
    feed = {i.name: np.ascontiguousarray(inputs[i.name][:1], dtype=np.float32) for i in session.get_inputs()}
    for _ in range(policy.warmup):
        session.run(None, feed)
    times = []
    for _ in range(policy.runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def latency_gate(onnx_path: Path, inputs: dict[str, np.ndarray], policy: LatencyPolicy) -> GateResult:
    if policy.max_ms is None:
        return GateResult("latency", SKIP, "no ceiling configured (registry.latency.max_ms=null)")
    ms = measure_latency_ms(onnx_path, inputs, policy)
    ok = ms <= policy.max_ms
    return GateResult(
        "latency",
        PASS if ok else FAIL,
        f"median {ms:.4g} ms {'<=' if ok else '>'} {policy.max_ms:g} ms (onnxruntime CPU, batch 1, "
        f"{policy.runs} runs, {policy.threads} thread(s))",
    )


def decorrelation_gate(
    label: np.ndarray,
    score: np.ndarray,
    weight: np.ndarray,
    aux: dict[str, np.ndarray],
    policy: DecorrelationPolicy,
    specs: Sequence[DecorrelationSpec],
) -> GateResult:
    """The floor on 1/JSD, measured as the candidate's evaluation measures it.

    Args:
        specs: the candidate run's ``evaluation.decorrelation`` entries; the one of
            ``policy.variable`` gives scale, binning and cut efficiency, so that the value equals
            the run's logged ``test/inv_jsd<eff>_<name>`` on the same test events.

    Raises:
        ConfigError: a floor is set but the evaluation does not measure that variable, or the
            variable is not an aux branch of the data.
    """
    if policy.min_inverse_jsd is None:
        return GateResult("decorrelation", SKIP, "no floor configured (registry.decorrelation.min_inverse_jsd=null)")
    spec = next((s for s in specs if s.variable == policy.variable), None)
    if spec is None:
        measured = ", ".join(f"{s.variable} ({s.name})" for s in specs) or "nothing"
        raise ConfigError(
            f"registry.decorrelation.variable={policy.variable!r}: the candidate's evaluation does not measure "
            f"1/JSD against it (evaluation.decorrelation measures {measured}); add it there, so that the gate "
            "and the logged test/inv_jsd50 are one figure"
        )
    values = spec.values(aux, "the test data")
    try:
        value = inverse_jsd(label, score, weight, values, spec.eff_sig, spec.bins)
    except ConfigError as err:
        return GateResult("decorrelation", FAIL, f"1/JSD({policy.variable}) undefined: {err}")
    ok = value >= policy.min_inverse_jsd
    return GateResult(
        "decorrelation",
        PASS if ok else FAIL,
        f"1/JSD of background {policy.variable} passing vs failing the {spec.eff_sig:.0%} signal-efficiency cut "
        f"(test/inv_jsd{spec.tag}_{spec.name}) = {value:.4g} {'>=' if ok else '<'} {policy.min_inverse_jsd:g}",
    )
