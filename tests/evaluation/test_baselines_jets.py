"""The jet-tagger baselines on toys with known answers: single variables, the mass window + tau21 cut, jet BDTs."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from calolab.errors import ConfigError
from calolab.evaluation.baselines import BDT, W_WINDOW_MEV, MassWindowCut, Variable
from calolab.evaluation.metrics import auc, roc_curve

W_JET_VARIABLES = ("jet_m", "jet_tau21", "jet_pt", "jet_eta", "jet_nconst")


def w_toy(n: int, seed: int, *, signal_mass: float = 80.4e3, signal_tau21: tuple[float, float] = (2.0, 5.0)):
    """W jets (label 1) against QCD: a mass peak at m_W (MeV) and low tau21; QCD falls in mass and has high tau21."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(np.int64)
    sig = y == 1
    aux = {
        "jet_m": np.where(sig, rng.normal(signal_mass, 8e3, n), 20e3 + rng.exponential(60e3, n)),
        "jet_tau21": np.where(sig, rng.beta(*signal_tau21, n), rng.beta(5.0, 3.0, n)),
        "jet_pt": rng.uniform(250e3, 300e3, n),
        "jet_eta": rng.uniform(-2.0, 2.0, n),
        "jet_nconst": rng.poisson(np.where(sig, 30, 40)).astype(np.float64),
    }
    return aux, y, rng.uniform(0.5, 1.5, n)


def qg_toy(n: int, seed: int):
    """Quark jets (label 1) have fewer constituents and are narrower than gluon jets."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(np.int64)
    q = y == 1
    aux = {
        "jet_nconst": rng.poisson(np.where(q, 25, 40)).astype(np.float64),
        "jet_width": np.where(q, rng.gamma(2.0, 0.02, n), rng.gamma(3.0, 0.025, n)),
        "jet_pt": rng.uniform(500e3, 550e3, n),
    }
    return aux, y, rng.uniform(0.5, 1.5, n)


def ranked(score: np.ndarray) -> np.ndarray:
    """-inf (rejected outright) below every finite score, as the evaluation ranks it for the weighted ROC."""
    finite = np.isfinite(score)
    return np.where(finite, score, score[finite].min() - 1.0)


def weighted_fraction(mask: np.ndarray, of: np.ndarray, weight: np.ndarray) -> float:
    return float(weight[mask & of].sum() / weight[of].sum())


# -- Variable -----------------------------------------------------------------------------------


def test_a_perfectly_separating_variable_has_auc_one_and_flipping_the_direction_gives_zero(caplog):
    rng = np.random.default_rng(0)
    y = np.repeat([1, 0], 500)
    aux = {"x": np.where(y == 1, rng.uniform(1.0, 2.0, y.size), rng.uniform(-2.0, -1.0, y.size))}
    higher = Variable("x", "higher").fit(aux, y, None)
    assert higher.train_auc == 1.0 and auc(y, higher.score(aux)) == 1.0
    with caplog.at_level(logging.WARNING, logger="calolab.evaluation.baselines._variable"):
        lower = Variable("x", "lower").fit(aux, y, None)
    assert lower.train_auc == 0.0 and auc(y, lower.score(aux)) == 0.0
    assert "wrong way round" in caplog.text
    np.testing.assert_array_equal(lower.score(aux), -higher.score(aux))
    assert higher.passes(aux) is None and lower.passes(aux) is None


@pytest.mark.parametrize(
    ("toy", "variable", "direction"),
    [(w_toy, "jet_tau21", "lower"), (qg_toy, "jet_nconst", "lower"), (qg_toy, "jet_width", "lower")],
)
def test_the_published_single_variables_point_the_right_way(toy, variable, direction):
    train, y_train, w_train = toy(4000, seed=1)
    test, y_test, w_test = toy(4000, seed=2)
    base = Variable(variable, direction).fit(train, y_train, w_train)
    assert base.name == variable and base.label == variable and base.variables == (variable,)
    assert 0.75 < auc(y_test, base.score(test), w_test) < 1.0
    assert base.train_auc == pytest.approx(auc(y_train, -train[variable], w_train))


def test_variable_missing_values_rank_last_and_fitting_on_them_is_refused():
    aux, y, w = w_toy(1000, seed=3)
    base = Variable("jet_tau21", "lower").fit(aux, y, w)
    holes = dict(aux, jet_tau21=np.where(np.arange(y.size) % 10 == 0, np.nan, aux["jet_tau21"]))
    score = base.score(holes)
    assert np.all(score[::10] == -np.inf) and np.all(np.isfinite(np.delete(score, np.s_[::10])))
    with pytest.raises(ConfigError, match="'jet_tau21'.*finite"):
        Variable("jet_tau21", "lower").fit(holes, y, w)


def test_variable_errors_are_named():
    aux, y, w = w_toy(200, seed=4)
    with pytest.raises(ConfigError, match="did you mean 'jet_tau21'"):
        Variable("jet_tau12", "lower").fit(aux, y, w)
    with pytest.raises(ConfigError, match="direction=.up."):
        Variable("jet_tau21", "up")
    with pytest.raises(ConfigError, match="fitted"):
        Variable("jet_tau21").score(aux)


# -- MassWindowCut ------------------------------------------------------------------------------


def test_mass_window_default_is_65_to_105_gev_in_mev():
    cut = MassWindowCut()
    assert W_WINDOW_MEV == (65_000.0, 105_000.0) and cut.window == W_WINDOW_MEV
    assert cut.variables == ("jet_m", "jet_tau21") and cut.name == "mass_tau21"


def test_mass_window_score_roc_stops_at_the_window_efficiency():
    train, y_train, w_train = w_toy(6000, seed=5)
    test, y_test, w_test = w_toy(6000, seed=6)
    cut = MassWindowCut().fit(train, y_train, w_train)
    score = cut.score(test)
    inside = (test["jet_m"] >= 65e3) & (test["jet_m"] < 105e3)
    np.testing.assert_array_equal(np.isfinite(score), inside)
    np.testing.assert_array_equal(score[inside], -test["jet_tau21"][inside])  # lower tau21 = more W-like
    sig = y_test == 1
    eff_s, eff_b, thresholds = roc_curve(y_test, ranked(score), w_test)
    # the loosest real cut keeps the whole window; only "take everything" (the -inf events) lies beyond it
    assert eff_s[-2] == pytest.approx(weighted_fraction(inside, sig, w_test))
    assert eff_b[-2] == pytest.approx(weighted_fraction(inside, ~sig, w_test))
    assert 0.6 < eff_s[-2] < 0.99 and eff_b[-2] < 0.5
    assert thresholds[-1] == ranked(score).min() and (eff_s[-1], eff_b[-1]) == (1.0, 1.0)
    assert cut.window_efficiency == pytest.approx(weighted_fraction(inside, sig, w_test), abs=0.03)


@pytest.mark.parametrize("target", [0.5, 0.8])
def test_mass_window_working_point_keeps_the_target_of_the_signal_inside_the_window(target):
    train, y, w = w_toy(8000, seed=7)
    cut = MassWindowCut(target_efficiency=target).fit(train, y, w)
    passes = cut.passes(train)
    inside = (train["jet_m"] >= 65e3) & (train["jet_m"] < 105e3)
    sig = y == 1
    assert not np.any(passes & ~inside)
    assert weighted_fraction(passes, sig & inside, w) == pytest.approx(target, abs=2.0 / (sig & inside).sum())
    op, threshold = cut.cut
    assert op == "<"
    np.testing.assert_array_equal(passes, inside & (train["jet_tau21"] < threshold))
    assert cut.train_efficiency == pytest.approx(weighted_fraction(passes, sig, w))
    assert cut.train_efficiency == pytest.approx(cut.window_efficiency * target, abs=0.01)
    assert cut.train_background_efficiency == pytest.approx(weighted_fraction(passes, ~sig, w))
    assert cut.train_background_efficiency < 0.5 * cut.train_efficiency  # it rejects QCD


def test_mass_window_direction_higher_cuts_from_below():
    aux, y, w = w_toy(4000, seed=8)
    flipped = dict(aux, jet_tau21=1.0 - aux["jet_tau21"])  # now signal sits high
    cut = MassWindowCut(direction="higher").fit(flipped, y, w)
    assert cut.cut[0] == ">"
    inside = (aux["jet_m"] >= 65e3) & (aux["jet_m"] < 105e3)
    np.testing.assert_array_equal(cut.passes(flipped), inside & (flipped["jet_tau21"] > cut.cut[1]))
    np.testing.assert_allclose(cut.cut[1], 1.0 - MassWindowCut().fit(aux, y, w).cut[1])


def test_mass_window_cut_comes_from_the_training_signal_only():
    """Test signal made more two-prong than train: a cut fitted on train keeps more than 50% of it."""
    train, y_train, w_train = w_toy(6000, seed=9)
    test, y_test, w_test = w_toy(6000, seed=10, signal_tau21=(1.0, 6.0))
    cut = MassWindowCut().fit(train, y_train, w_train)
    before = cut.describe()
    passes = cut.passes(test)
    assert cut.describe() == before  # applying it changes nothing
    inside = (test["jet_m"] >= 65e3) & (test["jet_m"] < 105e3)
    assert weighted_fraction(passes, (y_test == 1) & inside, w_test) > 0.6
    refit = MassWindowCut().fit(test, y_test, w_test).cut[1]
    assert refit < cut.cut[1] - 0.02  # a fit on test would have cut tighter


def test_mass_window_missing_values_fail():
    aux, y, w = w_toy(1000, seed=11)
    cut = MassWindowCut().fit(aux, y, w)
    holes = dict(aux, jet_m=np.where(np.arange(y.size) < 5, np.nan, aux["jet_m"]))
    holes["jet_tau21"] = np.where(np.arange(y.size) >= y.size - 5, np.nan, aux["jet_tau21"])
    assert np.all(cut.score(holes)[:5] == -np.inf) and np.all(cut.score(holes)[-5:] == -np.inf)
    assert not cut.passes(holes)[:5].any() and not cut.passes(holes)[-5:].any()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window": (105e3, 65e3)}, "low < high"),
        ({"window": (65e3,)}, "window"),
        ({"window": (65e3, float("inf"))}, "finite"),
        ({"direction": "down"}, "direction"),
        ({"target_efficiency": 0.0}, "target_efficiency=0.0"),
        ({"name": "mass/tau21"}, "metric prefix"),
    ],
)
def test_mass_window_bad_settings(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        MassWindowCut(**kwargs)


def test_mass_window_in_the_wrong_unit_or_on_missing_variables_is_named():
    aux, y, w = w_toy(500, seed=12)
    with pytest.raises(ConfigError, match="unit .*MeV"):
        MassWindowCut(window=(65.0, 105.0)).fit(aux, y, w)  # GeV on an MeV branch: no signal inside
    with pytest.raises(ConfigError, match="did you mean 'jet_m'"):
        MassWindowCut(mass_variable="jet_mass").fit(aux, y, w)
    with pytest.raises(ConfigError, match="fitted"):
        MassWindowCut().passes(aux)


# -- BDT on jet variables -----------------------------------------------------------------------


def test_w_jet_bdt_beats_each_single_variable():
    train, y_train, w_train = w_toy(6000, seed=13)
    test, y_test, w_test = w_toy(4000, seed=14)
    bdt = BDT(W_JET_VARIABLES, absolute=("jet_eta",), max_iter=100).fit(train, y_train, w_train)
    bdt_auc = auc(y_test, bdt.score(test), w_test)
    tau21_auc = auc(y_test, Variable("jet_tau21", "lower").fit(train, y_train, w_train).score(test), w_test)
    window_auc = auc(y_test, ranked(MassWindowCut().fit(train, y_train, w_train).score(test)), w_test)
    assert bdt_auc > max(tau21_auc, window_auc) + 0.02 and bdt_auc > 0.95
    assert bdt.passes(test) is None and bdt.model.n_features_in_ == 5


def test_quark_gluon_bdt_matches_or_beats_multiplicity():
    train, y_train, w_train = qg_toy(6000, seed=15)
    test, y_test, w_test = qg_toy(4000, seed=16)
    bdt = BDT(("jet_nconst", "jet_width", "jet_pt"), label="q/g BDT", max_iter=100).fit(train, y_train, w_train)
    mult = Variable("jet_nconst", "lower").fit(train, y_train, w_train)
    assert auc(y_test, bdt.score(test), w_test) > auc(y_test, mult.score(test), w_test)


def test_bdt_absolute_variables_make_it_blind_to_the_sign():
    aux, y, w = w_toy(3000, seed=17)
    bdt = BDT(W_JET_VARIABLES, absolute=["jet_eta"], max_iter=20).fit(aux, y, w)
    mirrored = dict(aux, jet_eta=-aux["jet_eta"])
    np.testing.assert_array_equal(bdt.score(mirrored), bdt.score(aux))
    assert bdt.describe()["absolute"] == ["jet_eta"]
    with pytest.raises(ConfigError, match="absolute must list some of the variables"):
        BDT(("jet_m", "jet_tau21"), absolute=("jet_eta",))
    with pytest.raises(ConfigError, match="distinct"):
        BDT(("jet_m", "jet_m"))
    with pytest.raises(ConfigError, match="did you mean 'jet_nconst'"):
        BDT(("jet_m", "jet_ncons")).fit(aux, y, w)
