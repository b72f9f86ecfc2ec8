"""The promotion gates; each returns a :class:`GateResult` (pass, fail or skip, with the numbers).

- ``dataset``: candidate and champion were scored on the same frozen test set (same dataset
  digest); a mismatch is refused as bad input unless forced, and a forced one is recorded.
- ``metric``: the candidate beats the champion on the configured metric by at least
  ``min_improvement`` (both recomputed on the same events); the champion itself never passes.
- ``parity``: the registered ONNX file scores the test events as the restored PyTorch net does
  (:func:`calolab.export.check_parity`, onnxruntime at several batch sizes).
- ``latency`` (optional): median onnxruntime CPU latency at batch 1 under a ceiling.
- ``decorrelation`` (optional): 1/JSD of the background's ``variable`` distribution passing vs
  failing the candidate's cut at ``eff_sig``, above a floor.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calolab.errors import CalolabError, ConfigError
from calolab.evaluation.metrics import jsd, roc_curve
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


def metric_gate(
    policy: GatePolicy,
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    champion_version: str | None,
    candidate_is_champion: bool,
) -> GateResult:
    """The candidate must improve ``policy.metric`` by at least ``policy.min_improvement``."""
    m = policy.metric
    value = candidate[m]
    if candidate_is_champion:
        return GateResult(
            "metric", FAIL, f"not better than champion: it is the champion (v{champion_version}, {m} {value:.6g})"
        )
    if champion is None:
        return GateResult("metric", PASS, f"{m} {value:.6g}; no champion yet (first promotion)")
    gain = policy.improvement(value, champion[m])
    text = (
        f"{m} {value:.6g} vs champion v{champion_version} {champion[m]:.6g} ({policy.mode}): "
        f"improvement {gain:+.6g} {'>=' if gain >= policy.min_improvement else '<'} {policy.min_improvement:g}"
    )
    return GateResult("metric", PASS if gain >= policy.min_improvement else FAIL, text)


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


def inverse_jsd(
    label: np.ndarray, score: np.ndarray, weight: np.ndarray, values: np.ndarray, eff_sig: float, bins: int
) -> float:
    """1/JSD between the background's ``values`` passing and failing the cut at signal efficiency ``eff_sig``.

    Returns ``inf`` when the two distributions are identical (e.g. a constant variable). Raises
    ConfigError when the cut leaves no background on one side (the divergence is undefined).
    """
    eps_s, _, thresholds = roc_curve(label, score, weight)
    i = min(int(np.searchsorted(eps_s, eff_sig, side="left")), eps_s.size - 1)
    passed = np.asarray(score) >= thresholds[i]
    bkg = np.asarray(label) == 0
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values[bkg])):
        raise ConfigError("the decorrelation variable must be finite for every background event")
    edges = np.histogram_bin_edges(values[bkg], bins=bins)
    w = np.asarray(weight, dtype=np.float64)
    p, _ = np.histogram(values[bkg & passed], bins=edges, weights=w[bkg & passed])
    q, _ = np.histogram(values[bkg & ~passed], bins=edges, weights=w[bkg & ~passed])
    if not (p.sum() > 0 and q.sum() > 0):
        raise ConfigError(
            f"the cut at eff_sig={eff_sig:g} leaves {int((bkg & passed).sum())} background events passing and "
            f"{int((bkg & ~passed).sum())} failing: the divergence needs both"
        )
    d = jsd(p, q)
    return float("inf") if d == 0 else 1.0 / d


def decorrelation_gate(
    label: np.ndarray, score: np.ndarray, weight: np.ndarray, aux: dict[str, np.ndarray], policy: DecorrelationPolicy
) -> GateResult:
    if policy.min_inverse_jsd is None:
        return GateResult("decorrelation", SKIP, "no floor configured (registry.decorrelation.min_inverse_jsd=null)")
    if policy.variable not in aux:
        from calolab.errors import suggest

        raise ConfigError(
            f"registry.decorrelation.variable={policy.variable!r} is not an aux branch of the data"
            f"{suggest(policy.variable, aux)} (aux: {', '.join(sorted(aux))})"
        )
    try:
        value = inverse_jsd(label, score, weight, aux[policy.variable], policy.eff_sig, policy.bins)
    except ConfigError as err:
        return GateResult("decorrelation", FAIL, f"1/JSD({policy.variable}) undefined: {err}")
    ok = value >= policy.min_inverse_jsd
    return GateResult(
        "decorrelation",
        PASS if ok else FAIL,
        f"1/JSD of background {policy.variable} passing vs failing the {policy.eff_sig:.0%} signal-efficiency cut "
        f"= {value:.4g} {'>=' if ok else '<'} {policy.min_inverse_jsd:g}",
    )
