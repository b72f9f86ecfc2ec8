"""The cut-based tight-like working point and the shower-shape BDT, on toys with known structure."""

from __future__ import annotations

import numpy as np
import pytest

from calolab.errors import ConfigError
from calolab.evaluation import SHOWER_SHAPES, CutBasedTight, ShowerShapeBDT, auc


def correlated_shapes(n: int, seed: int, signal_mean: float = 1.0):
    """Nine shower-shape-like variables, each a noisy view of one latent separation variable."""
    rng = np.random.default_rng(seed)
    label = (rng.random(n) < 0.5).astype(np.int64)
    latent = np.where(label == 1, signal_mean, -1.0) + rng.normal(size=n)
    signs = (-1, 1, 1, -1, -1, -1, 1, -1, -1)  # Rhad small for photons, Reta large, ...
    shapes = {v: sg * 0.6 * latent + rng.normal(size=n) for v, sg in zip(SHOWER_SHAPES, signs, strict=True)}
    shapes["Eratio"] = np.where(rng.random(n) < 0.2, 1.0, shapes["Eratio"])  # a degenerate value with ties
    return shapes, label, rng.uniform(0.5, 1.5, n)


def weighted_eff(passed, label, weight, cls):
    m = label == cls
    return weight[m & passed].sum() / weight[m].sum()


@pytest.mark.parametrize("target", [0.85, 0.6])
def test_cut_based_reaches_target_efficiency_on_train(target):
    shapes, label, weight = correlated_shapes(20_000, seed=0)
    cut = CutBasedTight(target_efficiency=target).fit(shapes, label, weight)
    eff = weighted_eff(cut.passes(shapes), label, weight, 1)
    assert eff == pytest.approx(target, abs=0.01)
    assert cut.train_efficiency == pytest.approx(eff)
    assert weighted_eff(cut.passes(shapes), label, weight, 0) < 0.7 * target  # it rejects background
    assert set(cut.cuts) == set(SHOWER_SHAPES)


def test_cut_directions_follow_the_signal():
    shapes, label, weight = correlated_shapes(5000, seed=1)
    cuts = CutBasedTight().fit(shapes, label, weight).cuts
    assert cuts["Rhad"][0] == "<" and cuts["weta2"][0] == "<"
    assert cuts["Reta"][0] == ">" and cuts["Rphi"][0] == ">"


def test_tight_cut_lands_on_the_separating_variable():
    rng = np.random.default_rng(2)
    n = 20_000
    label = (rng.random(n) < 0.5).astype(np.int64)
    shapes = {v: rng.normal(size=n) for v in SHOWER_SHAPES}
    shapes["Reta"] = rng.normal(size=n) + 2.0 * label  # the only informative variable
    cut = CutBasedTight(target_efficiency=0.8).fit(shapes, label)
    op, thr = cut.cuts["Reta"]
    assert op == ">" and np.isfinite(thr)
    sig = label == 1
    assert np.mean(shapes["Reta"][sig] > thr) == pytest.approx(0.8, abs=0.01)
    for v in SHOWER_SHAPES:
        if v != "Reta":
            op, thr = cut.cuts[v]
            alone = shapes[v][sig] < thr if op == "<" else shapes[v][sig] > thr
            assert alone.mean() > 0.98, f"noise variable {v} got a tight cut {cut.cuts[v]}"


def test_cut_based_is_deterministic_and_tightness_matches_passes():
    shapes, label, weight = correlated_shapes(8000, seed=3)
    a = CutBasedTight().fit(shapes, label, weight)
    b = CutBasedTight().fit(shapes, label, weight)
    assert a.cuts == b.cuts
    assert a.score(shapes) is None  # a working point, not a discriminant
    tightness = a.tightness(shapes)
    np.testing.assert_array_equal(tightness > 0, a.passes(shapes))
    assert auc(label, tightness, weight) > 0.75  # a usable tightness scan
    nan_shapes = dict(shapes, Rhad=np.where(np.arange(label.size) == 0, np.nan, shapes["Rhad"]))
    assert not a.passes(nan_shapes)[0]


def test_cut_based_input_errors():
    shapes, label, _ = correlated_shapes(500, seed=4)
    with pytest.raises(ConfigError, match="did you mean 'Reta'"):
        CutBasedTight(variables=("Rhad", "Retaa")).fit(shapes, label)
    with pytest.raises(ConfigError, match="target_efficiency=1.2"):
        CutBasedTight(target_efficiency=1.2)
    with pytest.raises(ConfigError, match="fitted"):
        CutBasedTight().passes(shapes)
    bad = dict(shapes, Rhad=np.full(label.size, np.nan))
    with pytest.raises(ConfigError, match="'Rhad'.*finite"):
        CutBasedTight().fit(bad, label)


def test_bdt_beats_random_on_a_separable_toy_and_is_reproducible():
    train, y_train, w_train = correlated_shapes(6000, seed=5)
    test, y_test, w_test = correlated_shapes(4000, seed=6)
    bdt = ShowerShapeBDT().fit(train, y_train, w_train)
    score = bdt.score(test)
    assert score.shape == (4000,) and np.all((score >= 0) & (score <= 1))
    assert auc(y_test, score, w_test) > 0.85
    again = ShowerShapeBDT().fit(train, y_train, w_train).score(test)
    np.testing.assert_array_equal(score, again)


def test_bdt_with_kinematics_and_errors():
    shapes, label, weight = correlated_shapes(3000, seed=7)
    rng = np.random.default_rng(8)
    kin = dict(shapes, ph_pt=rng.uniform(2e4, 1e5, label.size), ph_eta=rng.uniform(-1.4, 1.4, label.size))
    bdt = ShowerShapeBDT(kinematics=True, max_iter=20).fit(kin, label, weight)
    assert bdt.model.n_features_in_ == len(SHOWER_SHAPES) + 2
    with pytest.raises(ConfigError, match="'ph_pt'"):
        ShowerShapeBDT(kinematics=True).fit(shapes, label, weight)
    with pytest.raises(ConfigError, match="fitted"):
        ShowerShapeBDT().score(shapes)
