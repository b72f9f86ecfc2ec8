"""evaluate_classifier end to end on toys whose true score beats the shower shapes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from calolab.errors import ConfigError
from calolab.evaluation import SHOWER_SHAPES, CutBasedTight, ShowerShapeBDT, evaluate_classifier
from calolab.evaluation import report as report_module

SIGNS = (-1, 1, 1, -1, -1, -1, 1, -1, -1)  # where photons sit: Rhad small, Reta large, ...


def photon_toy(n: int, seed: int, *, mu_constant: bool = False, signal_mean: float = 1.0, with_shapes: bool = True):
    """A split dict, the 'true' classifier score and EMB2-like images of one toy sample.

    A latent variable separates photons from jets; each shower shape sees it through a lot of
    noise while the score sees it almost directly, so the score beats cuts and BDT on shapes.
    """
    rng = np.random.default_rng(seed)
    label = (rng.random(n) < 0.5).astype(np.int64)
    latent = np.where(label == 1, signal_mean, -1.0) + rng.normal(size=n)
    aux = {}
    if with_shapes:
        aux = {v: s * 0.5 * latent + rng.normal(size=n) for v, s in zip(SHOWER_SHAPES, SIGNS, strict=True)}
    aux["ph_pt"] = rng.uniform(20e3, 150e3, n)  # MeV
    aux["ph_eta"] = rng.uniform(-1.37, 1.37, n)
    aux["mu"] = np.full(n, 40.0) if mu_constant else rng.choice([0.0, 20.0, 50.0], n)
    weight = rng.uniform(0.5, 1.5, n)
    score = 1.0 / (1.0 + np.exp(-(latent + 0.3 * rng.normal(size=n))))
    images = rng.normal(size=(n, 1, 7, 11))
    images[:, 0, 3, 5] += latent
    return {"label": label, "weight": weight, "aux": aux}, score, images


@pytest.fixture(scope="module")
def toy_result(tmp_path_factory):
    train, _, _ = photon_toy(4000, seed=1)
    test, score, images = photon_toy(5000, seed=2)
    out = tmp_path_factory.mktemp("eval")
    result = evaluate_classifier(
        score=score,
        test=test,
        train=train,
        out_dir=out,
        title="toy",
        inputs_for_maps={"EMB2": images, "EMB1": images[:, :, :, :3]},
    )
    return result, out, test, score, images


def test_writes_every_figure_as_a_readable_png(toy_result):
    result, out, *_ = toy_result
    expected = {"roc", "score", "eff_vs_pt", "eff_vs_eta", "eff_vs_mu", "corr_EMB2", "corr_EMB1"}
    assert set(result.figures) == expected
    for name, path in result.figures.items():
        assert path.parent == out and path.stat().st_size > 0, name
        img = matplotlib.image.imread(path)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100, name


def test_metrics_are_finite_and_the_better_score_beats_the_baselines(toy_result):
    m = toy_result[0].metrics
    for key in (
        "auc",
        "rej50",
        "rej80",
        "eff_at_baseline_rej",
        "baseline_eff",
        "baseline_rej",
        "bdt_auc",
        "bdt_rej50",
        "bdt_eff_at_baseline_rej",
    ):
        assert math.isfinite(m[f"test/{key}"]), key
    assert m["test/n_events"] == 5000 and 0 < m["test/n_signal"] < 5000
    assert m["test/eff_at_baseline_rej"] > m["test/baseline_eff"] + 0.03
    assert m["test/eff_at_baseline_rej"] > m["test/bdt_eff_at_baseline_rej"]
    assert m["test/auc"] > m["test/bdt_auc"] > 0.7
    assert m["test/rej50"] > m["test/bdt_rej50"]
    assert m["test/baseline_eff"] == pytest.approx(0.85, abs=0.04)  # same distributions as train


def test_tables_hold_the_binned_numbers_and_are_strict_json(toy_result):
    result, out, test, *_ = toy_result
    tables = result.tables
    assert set(tables["binned"]) == {"pt", "eta", "mu"}
    eta = tables["binned"]["eta"]["working_points"]
    assert set(eta) == {"classifier", "cut_based"}
    assert eta["cut_based"]["edges"] == [0.0, 0.6, 0.8, 1.15, 1.37]
    assert tables["binned"]["mu"]["working_points"]["classifier"]["n_sig"] != []
    assert len(tables["binned"]["mu"]["working_points"]["classifier"]["sig_eff"]) == 3  # mu = 0, 20, 50
    sig = test["label"] == 1
    total = sum(eta["classifier"]["sig_weight"])
    assert total == pytest.approx(test["weight"][sig].sum())
    summary = json.loads((out / "evaluation.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert summary["metrics"]["test/auc"] == pytest.approx(result.metrics["test/auc"])
    json.dumps(tables, allow_nan=False)


def test_correlation_map_equals_corrcoef_for_a_pixel(toy_result):
    result, _, _, score, images = toy_result
    corr = np.array(result.tables["correlation"]["EMB2"], dtype=float)
    assert corr.shape == (7, 11)
    for i, j in ((3, 5), (0, 0), (6, 10)):
        assert corr[i, j] == pytest.approx(np.corrcoef(images[:, 0, i, j], score)[0, 1], abs=1e-9)
    assert corr[3, 5] > 0.5 and np.abs(np.delete(corr.ravel(), 3 * 11 + 5)).max() < 0.1


def test_baselines_are_fitted_on_train_only(tmp_path, monkeypatch):
    """Train signal sits elsewhere than test signal: a fit on test would hit 85% there, not below."""
    train, _, _ = photon_toy(3000, seed=3, signal_mean=2.0)
    test, score, _ = photon_toy(2500, seed=4, signal_mean=0.3)
    seen = []
    for cls in (CutBasedTight, ShowerShapeBDT):
        original = cls.fit

        def spy(self, shapes, label, weight=None, _original=original):
            seen.append((shapes, label, weight))
            return _original(self, shapes, label, weight)

        monkeypatch.setattr(cls, "fit", spy)
    result = evaluate_classifier(score=score, test=test, train=train, out_dir=tmp_path)
    assert len(seen) == 2
    for shapes, label, weight in seen:
        assert label is train["label"] and weight is train["weight"]
        assert all(shapes[v] is train["aux"][v] for v in SHOWER_SHAPES)
    reference = CutBasedTight().fit(train["aux"], train["label"], train["weight"])
    sig = test["label"] == 1
    expected = test["weight"][sig & reference.passes(test["aux"])].sum() / test["weight"][sig].sum()
    assert result.metrics["test/baseline_eff"] == pytest.approx(expected)
    assert result.metrics["test/baseline_eff"] < 0.75
    assert result.metrics["test/n_events"] == 2500


def test_constant_mu_is_skipped_with_a_reason(tmp_path):
    train, _, _ = photon_toy(1500, seed=5, mu_constant=True)
    test, score, _ = photon_toy(1500, seed=6, mu_constant=True)
    result = evaluate_classifier(score=score, test=test, train=train, out_dir=tmp_path)
    assert "eff_vs_mu" not in result.figures and "mu" not in result.tables["binned"]
    assert "constant" in result.tables["skipped"]["eff_vs_mu"]
    assert not (tmp_path / "eff_vs_mu.png").exists()


def test_without_shower_shapes_only_the_classifier_is_evaluated(tmp_path):
    train, _, _ = photon_toy(1000, seed=7, with_shapes=False)
    test, score, _ = photon_toy(1500, seed=8, with_shapes=False)
    del test["aux"]["mu"]
    out = tmp_path / "not" / "yet"
    result = evaluate_classifier(score=score, test=test, train=train, out_dir=out, baselines=[])
    assert all(Path(p).parent == out for p in result.figures.values()) and (out / "evaluation.json").exists()
    assert {"test/auc", "test/rej50", "test/rej80"} <= set(result.metrics)
    assert not any("baseline" in k or "bdt" in k for k in result.metrics)
    assert set(result.figures) == {"roc", "score", "eff_vs_pt", "eff_vs_eta"}
    assert "baselines" in result.tables["skipped"] and "eff_vs_mu" in result.tables["skipped"]
    eff = result.tables["binned"]["pt"]["working_points"]["classifier"]
    sig_eff = np.average(eff["sig_eff"], weights=eff["sig_weight"])
    assert sig_eff == pytest.approx(0.5, abs=0.01)  # the classifier's own 50% working point


def test_partial_shower_shapes_and_bad_shapes_raise(tmp_path):
    train, _, _ = photon_toy(500, seed=9)
    test, score, images = photon_toy(500, seed=10)
    del test["aux"]["Reta"]
    with pytest.raises(ConfigError, match="'test': \\['Reta'\\]"):
        evaluate_classifier(score=score, test=test, train=train, out_dir=tmp_path)
    test, score, images = photon_toy(500, seed=10)
    with pytest.raises(ConfigError, match="one length"):
        evaluate_classifier(score=score[:-1], test=test, train=train, out_dir=tmp_path)
    with pytest.raises(ConfigError, match="inputs_for_maps\\['EMB2'\\]"):
        evaluate_classifier(
            score=score, test=test, train=train, out_dir=tmp_path, inputs_for_maps={"EMB2": images[:10]}
        )


@pytest.mark.parametrize(
    ("abs_eta", "edges"),
    [
        (np.array([0.1, 1.3]), [0.0, 0.6, 0.8, 1.15, 1.37]),
        (np.array([0.1, 1.4]), [0.0, 0.6, 0.8, 1.15, 1.37, 1.52]),
        (np.array([0.1, 1.9]), [0.0, 0.6, 0.8, 1.15, 1.37, 1.52, 1.81, 2.01]),
    ],
)
def test_eta_bins_are_the_atlas_ones(abs_eta, edges):
    assert report_module._eta_edges(abs_eta).tolist() == edges
