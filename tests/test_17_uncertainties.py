"""Issue 17: every reported figure with its uncertainty, bounds flagged as bounds, comparisons resolved or not.

Intervals against closed forms (Wilson, the weighted binomial variance, Hanley-McNeil for the AUC),
seeded coverage simulations (about 68% of 1-sigma intervals cover the truth), a weighted sample
with no background passing the cut (a flagged lower bound, printed "> X"), the end-of-run summary,
the ROC band, and the promotion gate's "not resolved" refusals.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from calolab.commands.train import summary_lines
from calolab.evaluation import ClassifierEvaluation, evaluate_classifier
from calolab.evaluation import bootstrap as B
from calolab.evaluation import uncertainty as U
from calolab.evaluation.metrics import _weighted_binomial, auc, efficiency_at_rejection
from calolab.registry import gates as G
from calolab.registry.policy import GatePolicy
from tests.evaluation.test_report import photon_toy


def binormal(n: int, d: float, seed: int, weights: bool = False):
    """Signal N(d, 1) vs background N(0, 1): the true AUC is Phi(d / sqrt 2)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(int)
    s = rng.normal(size=n) + d * y
    w = rng.uniform(0.5, 1.5, n) if weights else None
    return y, s, w


# ---- intervals against closed forms ----------------------------------------------------------


def test_wilson_interval_closed_form_and_large_n_limit():
    lo, hi = U.wilson_interval(0.3, 100)
    # (p + 1/2n +- sqrt(p(1-p)/n + 1/4n^2)) / (1 + 1/n) for z = 1
    centre, half = (0.3 + 0.005) / 1.01, math.sqrt(0.3 * 0.7 / 100 + 1 / 40000) / 1.01
    assert (lo, hi) == pytest.approx((centre - half, centre + half), rel=1e-12)
    lo, hi = U.wilson_interval(0.3, 1e6)  # the normal approximation for large n
    assert hi - lo == pytest.approx(2 * math.sqrt(0.3 * 0.7 / 1e6), rel=1e-3)
    assert U.wilson_interval(0.0, 99) == pytest.approx((0.0, 1 / 100))  # z^2 / (n + z^2)


def test_weighted_efficiency_uses_effective_counts():
    rng = np.random.default_rng(3)
    w = rng.uniform(0.1, 3.0, 5000)
    passed = rng.random(5000) < 0.4
    n_eff = U.effective_count(w)
    assert n_eff == pytest.approx(w.sum() ** 2 / (w**2).sum()) and n_eff < 5000
    m = U.efficiency(w[passed].sum(), w.sum(), n_eff)
    # the Wilson width on n_eff agrees with the weighted binomial variance for a random selection
    _, err = _weighted_binomial(
        np.array([w[passed].sum()]), np.array([(w[passed] ** 2).sum()]), np.array([w.sum()]), np.array([(w**2).sum()])
    )
    assert m.err == pytest.approx(err[0], rel=0.05)


def test_rejection_interval_is_the_inverted_efficiency_interval():
    r = U.rejection(0.01, 10_000)
    lo, hi = U.wilson_interval(0.01, 10_000)
    assert r.value == pytest.approx(100) and not r.is_bound
    assert r.value - r.err_lo == pytest.approx(1 / hi) and r.value + r.err_hi == pytest.approx(1 / lo)
    assert r.err_hi > r.err_lo  # 1/eps is skewed upwards
    b = U.rejection(0.0, 327.0, max_rejection=6.265e6)
    assert b.is_bound and b.value == pytest.approx(328.0) and str(b) == "> 328"
    assert U.rejection(0.0, 327.0, max_rejection=50.0).value == 50.0  # never beyond what the sample expresses


def test_bootstrap_auc_spread_matches_hanley_mcneil():
    y, s, _ = binormal(20_000, 1.0, seed=1)
    reps = B.bootstrap(y, {"a": s}, replicas=400, seed=2, efficiencies=())
    a = auc(y, s)
    closed = U.hanley_mcneil(a, y.sum(), (1 - y).sum())
    assert B.spread(reps["a"]["auc"]) == pytest.approx(closed, rel=0.15)


def test_bootstrap_working_point_matches_the_metrics_and_the_binomial():
    y, s, w = binormal(20_000, 1.5, seed=4, weights=True)
    cut = np.random.default_rng(5).normal(size=y.size) + 1.5 * y > 1.0  # a cut-based selection
    # on unit draws the replica read-out is the metric itself
    ys, _, starts, order = B._sorted(y, s, w)
    r = B._ranking(ys, starts, order)
    eb = w[cut & (y == 0)].sum() / w[y == 0].sum()
    got = B._readouts(r, w[r.sig][None], w[r.bkg][None], (), bkg_eff_targets=np.array([eb]))["eff_at_rej"]
    assert got[0] == pytest.approx(efficiency_at_rejection(y, s, 1 / eb, w)[0], rel=1e-12)
    reps = B.bootstrap(y, {"a": s}, w, replicas=400, seed=6, efficiencies=(), working_point=cut)
    eff = w[cut & (y == 1)].sum() / w[y == 1].sum()
    n_eff = U.effective_count(w[y == 1])
    assert B.spread(reps["_working_point"]["eff"]) == pytest.approx(math.sqrt(eff * (1 - eff) / n_eff), rel=0.15)


# ---- coverage --------------------------------------------------------------------------------


def test_weighted_wilson_intervals_cover_the_true_efficiency_68_percent_of_the_time():
    # a binomial interval's coverage oscillates with p at fixed n: average over true efficiencies
    rng = np.random.default_rng(12345)
    covered = []
    for _ in range(2000):
        p = rng.uniform(0.05, 0.95)
        w = rng.uniform(0.2, 2.0, 300)
        passed = rng.random(300) < p
        m = U.efficiency(w[passed].sum(), w.sum(), U.effective_count(w))
        covered.append(m.value - m.err_lo <= p <= m.value + m.err_hi)
    assert np.mean(covered) == pytest.approx(0.683, abs=0.03)


def test_bootstrap_auc_errors_cover_the_true_auc_68_percent_of_the_time():
    d, toys = 1.0, 150
    truth = norm.cdf(d / math.sqrt(2))
    covered = []
    for t in range(toys):
        y, s, w = binormal(2000, d, seed=1000 + t)
        reps = B.bootstrap(y, {"a": s}, replicas=200, seed=t, efficiencies=())
        covered.append(abs(auc(y, s) - truth) <= B.spread(reps["a"]["auc"]))
    # 150 toys: the fraction's own spread is 0.038
    assert 0.57 <= np.mean(covered) <= 0.80


# ---- bounds ----------------------------------------------------------------------------------


def pt_hat_weighted(n: int, seed: int):
    """A separable sample with weights spanning three orders of magnitude (pT-hat-biased background)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(int)
    s = np.where(y == 1, rng.uniform(0.6, 1.0, n), rng.uniform(0.0, 0.55, n))
    s[np.flatnonzero(y == 0)[:3]] = 0.7  # three background events pass the 80% cut, none the 50% one
    w = 10 ** rng.uniform(-3, 0, n)
    return y, s, w


def test_no_background_passing_gives_a_flagged_lower_bound():
    y, s, w = pt_hat_weighted(4000, seed=8)
    m = ClassifierEvaluation.key_metrics(y, s, w)
    n_eff = U.effective_count(w[y == 0])
    assert m["test/rej50_is_bound"] == 1.0
    # the lower limit of the Wilson interval on n_eff, not sum w / min w (what the sample can express)
    assert m["test/rej50"] == pytest.approx(n_eff + 1.0)
    assert m["test/rej50"] < w[y == 0].sum() / w[y == 0].min()
    assert "test/rej50_err_hi" not in m  # unbounded above: not logged
    assert m["test/rej80_is_bound"] == 0.0 and m["test/rej80_err_hi"] > 0
    assert U.format_metric(m, "test/rej50").startswith("> ")
    assert not U.format_metric(m, "test/rej80").startswith(">")


def test_evaluation_logs_uncertainties_comparisons_bands_and_the_summary_prints_bounds(tmp_path):
    test, _, _ = photon_toy(3000, seed=21)
    train, _, _ = photon_toy(3000, seed=22)
    y = test["label"]
    score = np.where(y == 1, 0.9, 0.1) + 0.15 * np.random.default_rng(1).normal(size=y.size)
    score[np.flatnonzero(y == 0)[:5]] = 0.6  # a few background events are signal-like
    test["weight"] = 10 ** np.random.default_rng(2).uniform(-3, 0, y.size)
    result = evaluate_classifier(score=score, test=test, train=train, out_dir=tmp_path)
    m, tables = result.metrics, result.tables
    assert m["test/rej50_is_bound"] == 1.0
    for key in ("test/auc_err", "test/bdt_auc_err", "test/auc_vs_bdt_err", "test/eff_at_baseline_rej_vs_baseline_err"):
        assert np.isfinite(m[key]) and m[key] > 0, key
    assert m["test/auc_vs_bdt"] == pytest.approx(m["test/auc"] - m["test/bdt_auc"])
    assert m["test/baseline_eff_err_lo"] > 0 and m["test/baseline_rej_err_hi"] > 0
    lines = {c["b"]: c for c in tables["comparisons"]}
    assert set(lines) == {"bdt", "baseline"} and lines["bdt"]["resolved"]
    assert "(resolved; n_eff" in lines["bdt"]["line"]
    band = tables["uncertainty"]["roc_bands"]["net"]
    lo, hi = np.array(band["lo"], dtype=float), np.array(band["hi"], dtype=float)
    assert len(lo) == len(band["eff_sig"]) and np.all(lo[np.isfinite(hi)] <= hi[np.isfinite(hi)])
    assert result.figures["roc"].stat().st_size > 0
    printed = "\n".join(summary_lines(m))
    assert f"> {m['test/rej50']:.4g}" in printed
    assert "net vs bdt (auc): +" in printed and "(resolved; n_eff" in printed
    assert f"{m['test/auc']:.4g} +- " in printed


# ---- the promotion gate ----------------------------------------------------------------------


def gate_policy(**over) -> GatePolicy:
    cfg = {
        "metric": "test/auc",
        "mode": "max",
        "min_improvement": 0.0,
        "min_improvement_sigma": None,
        "bootstrap_replicas": 300,
        "bootstrap_seed": 0,
        "parity": {"atol": None, "rtol": None, "events": 10},
        "latency": {"max_ms": None, "runs": 1, "warmup": 0, "threads": 1},
        "decorrelation": {"min_inverse_jsd": None, "variable": "mu"},
        "force_digest": False,
        "lock_timeout_s": 1,
    }
    return GatePolicy.from_config(cfg | over)


def two_models(better_by: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    y, s, _ = binormal(4000, 1.0, seed=seed)
    latent = s
    champion = latent + 0.8 * rng.normal(size=y.size)
    candidate = latent + 0.8 * rng.normal(size=y.size) + better_by * y
    return y, candidate, champion


def test_a_difference_within_the_uncertainty_is_refused_as_not_resolved():
    y, cand, champ = two_models(better_by=0.02, seed=17)
    w = np.ones(y.size)
    c, h = ClassifierEvaluation.key_metrics(y, cand, w), ClassifierEvaluation.key_metrics(y, champ, w)
    assert c["test/auc"] > h["test/auc"]  # the candidate is ahead, but by less than its uncertainty
    paired = G.paired_comparisons(y, cand, champ, w, replicas=300, seed=0)
    assert 0 < paired["test/auc"].diff < 2 * paired["test/auc"].err
    assert G.metric_gate(gate_policy(), c, h, "1", False, paired).status == "pass"  # the fixed threshold alone
    gate = G.metric_gate(gate_policy(min_improvement_sigma=2.0), c, h, "1", False, paired)
    assert gate.status == "fail" and "not resolved" in gate.detail and "paired bootstrap" in gate.detail
    # without the paired comparison: both models' own errors in quadrature, still not resolved
    gate = G.metric_gate(gate_policy(min_improvement_sigma=2.0), c, h, "1", False)
    assert gate.status == "fail" and "own errors" in gate.detail


def test_a_clearly_better_candidate_is_resolved():
    y, cand, champ = two_models(better_by=0.6, seed=12)
    w = np.ones(y.size)
    c, h = ClassifierEvaluation.key_metrics(y, cand, w), ClassifierEvaluation.key_metrics(y, champ, w)
    paired = G.paired_comparisons(y, cand, champ, w, replicas=300, seed=0)
    gate = G.metric_gate(gate_policy(min_improvement_sigma=2.0), c, h, "1", False, paired)
    assert gate.status == "pass" and "resolved" in gate.detail and "not resolved" not in gate.detail
    # the paired spread is smaller than the unpaired one: the two models share the events
    assert paired["test/auc"].err < math.hypot(c["test/auc_err"], h["test/auc_err"])


def test_the_gate_never_compares_two_bounds_and_decides_on_the_resolved_metric():
    y, s, w = pt_hat_weighted(4000, seed=8)
    c = ClassifierEvaluation.key_metrics(y, s, w)
    h = ClassifierEvaluation.key_metrics(y, s * 0.99 + 0.001 * np.random.default_rng(0).normal(size=y.size), w)
    assert c["test/rej50_is_bound"] == h["test/rej50_is_bound"] == 1.0
    gate = G.metric_gate(gate_policy(metric="test/rej50", min_improvement=0.0), c, h, "1", False)
    assert "not resolved" in gate.detail and "decided on test/auc" in gate.detail
    assert "> " in gate.detail  # the bounds are shown as bounds
    assert gate.status == ("pass" if c["test/auc"] - h["test/auc"] >= 0 else "fail")


def test_bad_sigma_option_is_refused():
    from calolab.errors import ConfigError

    with pytest.raises(ConfigError, match="min_improvement_sigma must be >= 0"):
        gate_policy(min_improvement_sigma=-1)
    with pytest.raises(ConfigError, match="bootstrap_replicas must be an integer >= 2"):
        gate_policy(bootstrap_replicas=1)


def test_tiny_samples_and_unresolved_replicas_do_not_warn():
    # a few dozen test events (a smoke training): replicas without background, rejections inf
    y = np.array([0, 1] * 6)
    s = np.linspace(0, 1, 12) + 0.5 * y
    reps = B.bootstrap(y, {"a": s, "b": s**2}, replicas=200, seed=0, working_point=s > 0.8)
    assert np.isinf(reps["a"]["rej50"]).any()
    unresolved, err = B.paired_difference(reps["a"]["rej50"], reps["b"]["rej50"])
    assert unresolved > 0.05 and (np.isnan(err) or err >= 0)
    paired = G.paired_comparisons(y, s, s**2, replicas=200)
    assert paired["test/rej50"].bound and "not resolved" in paired["test/rej50"].line()


def test_poisson_draws_are_the_inverse_cdf_of_the_uniforms():
    u = np.random.default_rng(3).random((40, 5000))
    expected = np.searchsorted(B._POISSON1_CDF, u, side="right")
    np.testing.assert_array_equal(B.poisson1(np.random.default_rng(3), (40, 5000)), expected)
    assert expected.max() >= 6  # the tail beyond the counted comparisons is exercised
