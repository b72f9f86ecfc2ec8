"""Metric correctness: against sklearn, hand-made cases, analytic Gaussian toys and each other."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from calolab.errors import ConfigError
from calolab.evaluation import (
    auc,
    binned_efficiency,
    efficiency_at_rejection,
    jsd,
    pixel_score_correlation,
    rejection_at_efficiency,
    roc_curve,
)


def gaussian_toy(n: int, shift: float = 1.0, seed: int = 0):
    """Signal ~ N(shift, 1), background ~ N(0, 1), half and half."""
    rng = np.random.default_rng(seed)
    label = np.arange(n) % 2
    score = rng.normal(0.0, 1.0, n) + shift * label
    return label, score, rng.uniform(0.5, 2.0, n)


def pairwise_auc(label, score, weight):
    """Independent weighted AUC: P(signal scores above background), ties count one half."""
    s, b = label == 1, label == 0
    diff = score[s][:, None] - score[b][None, :]
    wins = (diff > 0) + 0.5 * (diff == 0)
    ww = weight[s][:, None] * weight[b][None, :]
    return float((wins * ww).sum() / ww.sum())


def test_auc_matches_sklearn_and_pairwise_count_with_weights():
    label, score, weight = gaussian_toy(600, seed=1)
    score = np.round(score, 1)  # ties
    got = auc(label, score, weight)
    assert got == pytest.approx(roc_auc_score(label, score, sample_weight=weight), abs=1e-12)
    assert got == pytest.approx(pairwise_auc(label, score, weight), abs=1e-12)
    assert got != pytest.approx(auc(label, score), abs=1e-4)  # the weights are used


def test_auc_perfect_reversed_random():
    label = np.array([0] * 50 + [1] * 50)
    score = np.linspace(0, 1, 100)
    assert auc(label, score) == 1.0
    assert auc(label, -score) == 0.0
    rng = np.random.default_rng(2)
    assert auc(rng.integers(0, 2, 40000), rng.random(40000)) == pytest.approx(0.5, abs=0.01)


def test_roc_curve_points_are_weighted_fractions():
    label, score, weight = gaussian_toy(2000, seed=3)
    eff_s, eff_b, thr = roc_curve(label, score, weight)
    assert thr[0] == np.inf and eff_s[0] == 0 and eff_b[0] == 0
    assert eff_s[-1] == pytest.approx(1) and eff_b[-1] == pytest.approx(1)
    assert np.all(np.diff(eff_s) >= 0) and np.all(np.diff(eff_b) >= 0)
    i = len(thr) // 3
    cut = score >= thr[i]
    assert eff_s[i] == pytest.approx(weight[cut & (label == 1)].sum() / weight[label == 1].sum())
    assert eff_b[i] == pytest.approx(weight[cut & (label == 0)].sum() / weight[label == 0].sum())


def test_rejection_of_gaussian_toy_matches_analytic():
    label, score, _ = gaussian_toy(400_000, shift=1.0, seed=4)
    # the cut at signal efficiency e sits at x = 1 + Phi^-1(1 - e); eps_B = 1 - Phi(x)
    for eff, rtol in ((0.5, 0.03), (0.8, 0.02)):
        expected = 1.0 / norm.sf(1.0 + norm.ppf(1.0 - eff))
        assert rejection_at_efficiency(label, score, eff) == pytest.approx(expected, rel=rtol)
    assert expected == pytest.approx(2.29, abs=0.01)  # R80 of this toy, by hand


def test_efficiency_at_rejection_inverts_rejection_at_efficiency():
    label, score, weight = gaussian_toy(50_000, shift=1.5, seed=5)
    for eff in (0.3, 0.5, 0.8, 0.95):
        rej = rejection_at_efficiency(label, score, eff, weight)
        got, thr = efficiency_at_rejection(label, score, rej, weight)
        assert got == pytest.approx(eff, abs=2e-3)
        cut = score >= thr
        assert weight[cut & (label == 0)].sum() / weight[label == 0].sum() <= 1.0 / rej * (1 + 1e-9)
        assert weight[cut & (label == 1)].sum() / weight[label == 1].sum() == pytest.approx(got)
        assert rejection_at_efficiency(label, score, got, weight) == pytest.approx(rej, rel=1e-3)


def test_rejection_is_finite_when_no_background_passes():
    label = np.array([0, 0, 0, 1, 1, 1])
    score = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    weight = np.array([1.0, 0.5, 2.0, 1, 1, 1])
    assert rejection_at_efficiency(label, score, 0.5, weight) == pytest.approx(3.5 / 0.5)
    # ...and a cut that keeps the heaviest background event gives the ordinary 1/eps_B
    assert rejection_at_efficiency(label, np.array([0.1, 0.2, 0.95, 0.7, 0.8, 0.9]), 0.5, weight) == pytest.approx(
        3.5 / 2.0
    )


def test_integer_weights_equal_duplicated_events_and_zero_weight_removes():
    label, score, _ = gaussian_toy(3000, seed=6)
    counts = np.random.default_rng(7).integers(0, 4, label.size)
    dup_l, dup_s = np.repeat(label, counts), np.repeat(score, counts)
    w = counts.astype(float)
    assert auc(label, score, w) == pytest.approx(auc(dup_l, dup_s), abs=1e-12)
    for eff in (0.5, 0.8):
        assert rejection_at_efficiency(label, score, eff, w) == pytest.approx(
            rejection_at_efficiency(dup_l, dup_s, eff)
        )
    assert efficiency_at_rejection(label, score, 5.0, w)[0] == pytest.approx(
        efficiency_at_rejection(dup_l, dup_s, 5.0)[0]
    )


def test_upweighting_signal_like_background_worsens_the_metrics():
    label, score, _ = gaussian_toy(20_000, seed=8)
    w = np.ones_like(score)
    heavy = w.copy()
    heavy[(label == 0) & (score > 1.0)] = 5.0
    assert auc(label, score, heavy) < auc(label, score, w) - 0.01
    assert rejection_at_efficiency(label, score, 0.5, heavy) < 0.6 * rejection_at_efficiency(label, score, 0.5, w)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"label": np.array([0, 2, 1])}, "only 0"),
        ({"weight": np.array([1.0, -1.0, 1.0])}, ">= 0"),
        ({"label": np.array([1, 1, 1])}, "signal and background"),
        ({"score": np.array([0.1, np.nan, 0.3])}, "finite"),
        ({"score": np.array([0.1, 0.2])}, "one length"),
    ],
)
def test_bad_inputs_raise_config_error_naming_the_problem(kwargs, match):
    args = {"label": np.array([0, 1, 1]), "score": np.array([0.1, 0.2, 0.3]), "weight": None} | kwargs
    with pytest.raises(ConfigError, match=match):
        auc(**args)


def test_out_of_range_working_points_raise():
    label, score, _ = gaussian_toy(100)
    with pytest.raises(ConfigError, match=r"eff_sig=1\.5"):
        rejection_at_efficiency(label, score, 1.5)
    with pytest.raises(ConfigError, match=r"rejection=0\.5"):
        efficiency_at_rejection(label, score, 0.5)


def test_binned_efficiency_counts_and_binomial_errors():
    label = np.array([1, 1, 1, 1, 0, 0, 1, 1, 0, 0, 1])
    passed = np.array([1, 1, 1, 0, 1, 0, 1, 0, 0, 0, 1], dtype=bool)
    values = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.5, 1.6, 1.7, 2.0, 5.0])  # 2.0: last edge, kept; 5.0: outside
    out = binned_efficiency(label, passed, values, [0, 1, 2])
    np.testing.assert_allclose(out["sig_eff"], [0.75, 0.5])
    np.testing.assert_allclose(out["sig_err"], [math.sqrt(0.75 * 0.25 / 4), math.sqrt(0.25 / 2)])
    np.testing.assert_allclose(out["bkg_eff"], [0.5, 0.0])
    np.testing.assert_array_equal(out["n_sig"], [4, 2])
    np.testing.assert_array_equal(out["n_bkg"], [2, 2])


def test_binned_efficiency_weighted_error_and_empty_bin():
    label = np.array([1, 1, 1, 0])
    passed = np.array([True, False, True, True])
    w = np.array([2.0, 1.0, 3.0, 1.0])
    out = binned_efficiency(label, passed, np.array([0.5, 0.5, 0.5, 0.5]), [0, 1, 2], w)
    eff = 5.0 / 6.0
    var = ((1 - 2 * eff) * (4 + 9) + eff**2 * (4 + 1 + 9)) / 36.0
    assert out["sig_eff"][0] == pytest.approx(eff)
    assert out["sig_err"][0] == pytest.approx(math.sqrt(var))
    assert np.isnan(out["sig_eff"][1]) and np.isnan(out["bkg_err"][1])
    assert out["sig_weight"][0] == pytest.approx(6.0)


def test_jsd_identical_disjoint_and_known_value():
    p = np.array([1.0, 3.0, 0.0, 6.0])
    assert jsd(p, 10 * p) == pytest.approx(0.0, abs=1e-12)
    assert jsd([1, 2, 0, 0], [0, 0, 5, 1]) == pytest.approx(1.0)
    # p = (1, 0), q = (1/2, 1/2): M = (3/4, 1/4), JSD = (log2(4/3) + (log2(2/3) + 1) / 2) / 2
    expected = 0.5 * (math.log2(4 / 3) + 0.5 * (math.log2(2 / 3) + 1.0))
    assert jsd([1, 0], [1, 1]) == pytest.approx(expected)
    assert jsd([1, 0], [1, 1]) == pytest.approx(jsd([1, 1], [1, 0]))
    with pytest.raises(ConfigError, match="not all zero"):
        jsd([0, 0], [1, 1])


def test_pixel_correlation_equals_corrcoef_and_chunks_agree():
    rng = np.random.default_rng(9)
    images = rng.normal(size=(500, 1, 4, 3))
    images[:, 0, 0, 0] = 7.0  # constant pixel: no correlation defined
    score = images[:, 0, 2, 1] * 0.5 + rng.normal(size=500)
    corr = pixel_score_correlation(images, score)
    assert corr.shape == (4, 3)
    for i, j in ((2, 1), (3, 2), (0, 1)):
        assert corr[i, j] == pytest.approx(np.corrcoef(images[:, 0, i, j], score)[0, 1], abs=1e-12)
    assert np.isnan(corr[0, 0])
    np.testing.assert_allclose(pixel_score_correlation(images[:, 0], score, chunk=7), corr, atol=1e-12)
