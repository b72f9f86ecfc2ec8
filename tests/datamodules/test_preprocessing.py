"""Normalisation, the event-number split, class weights and pT/eta reweighting."""

from __future__ import annotations

import numpy as np
import pytest

from datamodules.preprocessing import Reweighting, abs_sums, assign_splits, event_hash, event_weights, scales
from tests.datamodules import SHAPES, event_split, make_dm, photon_events, write_sample, write_tree

SPLITS = ("train", "val", "test")


def build(tmp_path, **kwargs):
    dm = make_dm(tmp_path, **kwargs)
    dm.prepare_data()
    dm.setup()
    return dm


def all_inputs(dm, name):
    return np.concatenate([np.asarray(dm.arrays(s).inputs[name]) for s in SPLITS])[:, 0]


def test_normalisation_modes(tmp_path):
    write_sample(tmp_path / "data")
    raw = build(tmp_path, normalisation="none", cache_dir=str(tmp_path / "c0"))
    layer = build(tmp_path, normalisation="layer", cache_dir=str(tmp_path / "c1"))
    cluster = build(tmp_path, normalisation="cluster", cache_dir=str(tmp_path / "c2"))
    totals = sum(all_inputs(raw, n).sum(axis=(1, 2), dtype=np.float64) for n in SHAPES)
    for name in SHAPES:
        x = all_inputs(raw, name)
        assert x.max() > 10  # MeV, untouched
        sums = x.sum(axis=(1, 2), dtype=np.float64)
        np.testing.assert_allclose(all_inputs(layer, name).sum(axis=(1, 2)), np.where(sums > 0, 1.0, 0.0), rtol=1e-5)
        np.testing.assert_allclose(all_inputs(layer, name), x / sums[:, None, None], rtol=1e-5)
        np.testing.assert_allclose(all_inputs(cluster, name), x / totals[:, None, None], rtol=1e-5)
    np.testing.assert_allclose(
        sum(all_inputs(cluster, n).sum(axis=(1, 2), dtype=np.float64) for n in SHAPES), 1.0, rtol=1e-5
    )
    assert len({raw.digest, layer.digest, cluster.digest}) == 3


def test_layer_normalisation_stays_bounded_with_noise():
    """A noise-only layer (sum near zero or negative) must not blow up or flip sign."""
    img = np.array([[[40.0, -39.0], [0.5, -1.0]], [[-5.0, -3.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]], np.float32)
    (f,) = scales({"x": abs_sums(img)}, "layer").values()
    out = img * f[:, None, None]
    assert np.abs(out).max() <= 1.0 + 1e-6
    np.testing.assert_allclose(np.abs(out[:2]).sum(axis=(1, 2)), 1.0, rtol=1e-6)
    assert (out[1] <= 0).all() and out[2].sum() == 0.0


def test_split_hash_is_deterministic_and_uniform():
    ev = np.arange(200_000, dtype=np.int64)
    u = event_hash(ev, salt=0)
    np.testing.assert_array_equal(u, event_hash(ev.copy(), salt=0))
    np.testing.assert_array_equal(u[::-1], event_hash(ev[::-1], salt=0))
    assert 0.0 <= u.min() and u.max() < 1.0
    hist, _ = np.histogram(u, bins=10, range=(0, 1))
    assert np.all(np.abs(hist / len(u) - 0.1) < 0.005)
    assert np.mean(u != event_hash(ev, salt=1)) > 0.99
    codes = assign_splits(ev, {"val": 0.15, "test": 0.15})
    frac = np.bincount(codes, minlength=3) / len(ev)
    np.testing.assert_allclose(frac, [0.7, 0.15, 0.15], atol=0.005)
    # unsigned and narrower integer types give the same hash for the same numbers
    np.testing.assert_array_equal(event_hash(ev.astype(np.uint64)), u)
    np.testing.assert_array_equal(event_hash(ev[:1000].astype(np.int32)), u[:1000])


def test_split_independent_of_file_order_and_other_events(tmp_path):
    files = write_sample(tmp_path / "data", n_files=3, per_file=150)
    a = build(tmp_path, files=[str(f) for f in files], cache_dir=str(tmp_path / "c1"))
    b = build(tmp_path, files=[str(f) for f in reversed(files)], cache_dir=str(tmp_path / "c2"))
    only_two = build(tmp_path, files=[str(files[2]), str(files[0])], cache_dir=str(tmp_path / "c3"))
    split_a, split_b, split_two = event_split(a), event_split(b), event_split(only_two)
    assert len(split_a) == 450 and split_a == split_b
    assert all(split_a[ev] == s for ev, s in split_two.items())
    assert len(split_two) == 300
    assert set(split_a.values()) == set(SPLITS)
    # the same events regrouped into other files land in the same splits
    regroup = tmp_path / "regrouped"
    regroup.mkdir()
    events = [photon_events(150, first=k * 150, seed=k) for k in range(3)]
    merged = {k: np.concatenate([e[k] for e in events])[::-1] for k in events[0]}
    write_tree(regroup / "all.root", merged)
    c = build(tmp_path, files=str(regroup / "all.root"), cache_dir=str(tmp_path / "c4"))
    assert event_split(c) == split_a


def test_split_salt_changes_the_split(tmp_path):
    write_sample(tmp_path / "data")
    a = event_split(build(tmp_path, cache_dir=str(tmp_path / "c1")))
    b = event_split(build(tmp_path, split_salt=7, cache_dir=str(tmp_path / "c2")))
    assert a.keys() == b.keys()
    assert sum(a[k] != b[k] for k in a) > 0.2 * len(a)


@pytest.mark.parametrize("with_weight_branch", [False, True])
def test_class_weights_balance_every_split(tmp_path, with_weight_branch):
    (tmp_path / "data").mkdir()
    events = photon_events(600, signal_fraction=0.25)
    events["w"] = np.random.default_rng(0).uniform(0.5, 2.0, 600).astype(np.float32)
    write_tree(tmp_path / "data" / "a.root", events)
    dm = build(tmp_path, weight="w" if with_weight_branch else None)
    for split in SPLITS:
        a = dm.arrays(split)
        label, w = np.asarray(a.label), np.asarray(a.weight, dtype=np.float64)
        assert 0 < (label == 1).sum() < (label == 0).sum()  # imbalanced on purpose
        np.testing.assert_allclose(w[label == 1].sum(), w[label == 0].sum(), rtol=1e-5)
        np.testing.assert_allclose(w.sum(), len(label), rtol=1e-5)
        if with_weight_branch:  # within a class, weights follow the weight branch
            rows = np.asarray(a.aux["event_number"])
            ratio = w[label == 0] / events["w"][rows][label == 0]
            np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)
    summary = dm.preprocessing_summary()["counts"]
    for split in SPLITS:
        assert summary[split]["signal_weight"] == pytest.approx(summary[split]["background_weight"], rel=1e-5)


def test_without_class_weights_the_weights_are_the_weight_branch(tmp_path):
    (tmp_path / "data").mkdir()
    events = photon_events(100)
    events["w"] = np.linspace(0.1, 3.0, 100).astype(np.float32)
    write_tree(tmp_path / "data" / "a.root", events)
    dm = build(tmp_path, weight="w", class_weights=False)
    a = dm.arrays("train")
    np.testing.assert_array_equal(np.asarray(a.weight), events["w"][np.asarray(a.aux["event_number"])])


PT_BINS = [20e3, 30e3, 40e3, 60e3, 90e3, 150e3]


def weighted_ratio(dm, split):
    a = dm.arrays(split)
    pt, label, w = np.asarray(a.aux["ph_pt"]), np.asarray(a.label), np.asarray(a.weight, np.float64)
    sig, _ = np.histogram(pt[label == 1], PT_BINS, weights=w[label == 1])
    bkg, _ = np.histogram(pt[label == 0], PT_BINS, weights=w[label == 0])
    return (bkg / bkg.sum()) / (sig / sig.sum())


def test_reweighting_flattens_background_to_signal_in_pt(tmp_path):
    write_sample(tmp_path / "data", n_files=2, per_file=1500)
    plain = build(tmp_path, cache_dir=str(tmp_path / "c1"))
    rw = {"variables": ["ph_pt", "ph_eta"], "bins": [PT_BINS, [0.0, 0.8, 1.37]], "abs": [False, True]}
    reweighted = build(tmp_path, reweight=rw, cache_dir=str(tmp_path / "c2"))
    before = weighted_ratio(plain, "train")
    assert np.max(np.abs(before - 1)) > 1.0  # background is much softer than signal
    np.testing.assert_allclose(weighted_ratio(reweighted, "train"), 1.0, rtol=1e-4)
    for split in ("val", "test"):  # ratio from train applied to the others: close, not exact
        assert np.max(np.abs(weighted_ratio(reweighted, split) - 1)) < 0.5 * np.max(
            np.abs(weighted_ratio(plain, split) - 1)
        )
    # signal weights are untouched by the reweighting (only class balance scales them)
    a = reweighted.arrays("train")
    sig_w = np.asarray(a.weight)[np.asarray(a.label) == 1]
    np.testing.assert_allclose(sig_w, sig_w[0], rtol=1e-6)
    summary = reweighted.preprocessing_summary()
    assert np.asarray(summary["reweight"]["ratio"]).shape == (5, 2)
    assert plain.digest != reweighted.digest


def test_reweighting_ratio_from_train_split_only():
    rw = Reweighting.from_config({"variables": ["x"], "bins": [[0, 1, 2]]})
    x = np.array([0.5, 0.5, 1.5, 1.5, 0.5, 1.5, 0.5, 0.5])
    label = np.array([1, 1, 0, 0, 0, 1, 0, 1], np.float32)
    codes = np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int8)  # the last two (val) must not count
    w, ratio = event_weights(label, codes, reweighting=rw, values={"x": x}, class_weights=False)
    # train: signal 2/3 in bin 0, 1/3 in bin 1; background 1/3, 2/3 -> ratio [2, 0.5]
    np.testing.assert_allclose(ratio, [2.0, 0.5])
    np.testing.assert_allclose(w, [1, 1, 0.5, 0.5, 2.0, 1, 2.0, 1])
