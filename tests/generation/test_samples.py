"""End-to-end generator tests: schema, determinism across workers, and the physics a
physicist checks first (prompt photons are narrow and have no hadronic leakage; W jets have
a W-mass peak and two prongs; gluon jets have more constituents; pileup is flagged)."""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pytest
import uproot

from calolab.generation.runner import run_generation

PHOTON_BRANCHES = {
    "ph_pt", "ph_eta", "ph_phi", "truth_label", "truth_pdgid", "mu", "event_number",
    "cells_EMB1", "cells_EMB2", "cells_EMB3", "cells_TileBar0",
    "Rhad", "Reta", "Rphi", "weta2", "wstot", "ws3", "Eratio", "DeltaE", "fside",
}  # fmt: skip
JET_BRANCHES = {
    "jet_pt", "jet_eta", "jet_phi", "jet_m", "jet_tau21", "jet_nconst", "truth_label", "mu", "event_number",
    "const_pt", "const_eta", "const_phi", "const_charge", "const_is_pileup",
}  # fmt: skip


def read(out, tree):
    return uproot.concatenate(f"{out}/*.root:{tree}")


@pytest.fixture(scope="module")
def photons(tmp_path_factory):
    """60 photon candidates in 2 chunks, generated once for the module's tests."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from calolab.app import CONF_DIR

    out = tmp_path_factory.mktemp("ph") / "photons"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("generate", ["sample=photons", "n_events=60", "chunk_size=30", "progress=false", "seed=11"])
    with open_dict(cfg):
        cfg.out = str(out)
    run_generation(cfg, "photons")
    return out


def test_photon_schema_units_and_mix(photons):
    arr = read(photons, "photons")
    assert PHOTON_BRANCHES <= set(arr.fields)
    assert len(arr) == 60
    assert int(ak.sum(arr.truth_label)) == 30  # signal_fraction 0.5
    assert np.asarray(arr.cells_EMB1).shape == (60, 56, 3)
    assert np.asarray(arr.cells_EMB2).shape == (60, 7, 11)
    assert np.asarray(arr.cells_EMB3).shape == (60, 4, 11)
    assert np.asarray(arr.cells_TileBar0).shape == (60, 2, 3)
    # selected on the reconstructed 3x7 cluster E_T (MeV); seeds above 8 GeV at truth level
    ph_pt = np.asarray(arr.ph_pt)
    assert ph_pt.min() >= 20_000 and ph_pt.max() <= 150_000
    assert np.abs(np.asarray(arr.ph_eta)).max() < 1.37
    assert np.asarray(arr.truth_pt).min() >= 8_000
    assert np.all(np.asarray(arr.mc_weight) > 0)
    assert sorted(np.asarray(arr.event_number).tolist()) == list(range(60))
    sig_pdg = np.asarray(arr.truth_pdgid)[np.asarray(arr.truth_label) == 1]
    bkg_pdg = np.asarray(arr.truth_pdgid)[np.asarray(arr.truth_label) == 0]
    assert set(sig_pdg.tolist()) == {22}
    assert set(bkg_pdg.tolist()) <= {
        111,
        221,
        223,
        331,
        113,
        213,
        -213,
        310,
        130,
        3122,
        -3122,
        3212,
        -3212,
        321,
        -321,
        411,
    }
    assert 111 in bkg_pdg


def test_photon_signal_background_physics(photons):
    """The first things a physicist checks: prompt photons are narrow, single-peaked in the
    strips and leave nothing in Tile; pi0-dominated jet candidates are wider, often show two
    strip maxima and leak hadronic energy."""
    arr = read(photons, "photons")
    y = np.asarray(arr.truth_label) == 1
    med = {
        k: (np.median(np.asarray(arr[k])[y]), np.median(np.asarray(arr[k])[~y]))
        for k in ("Rhad", "Reta", "Rphi", "wstot", "Eratio", "fside", "weta2")
    }
    assert med["Rhad"][0] < 0.02 < med["Rhad"][1]
    assert med["Reta"][0] > med["Reta"][1]
    assert med["Rphi"][0] > med["Rphi"][1]
    assert med["wstot"][0] < med["wstot"][1]
    assert med["Eratio"][0] > 0.8 > med["Eratio"][1]
    assert med["fside"][0] < med["fside"][1]
    # most of a photon's energy is in the middle layer
    e2 = np.asarray(arr.cells_EMB2).sum(axis=(1, 2))
    em = e2 + np.asarray(arr.cells_EMB1).sum(axis=(1, 2)) + np.asarray(arr.cells_EMB3).sum(axis=(1, 2))
    assert np.median((e2 / em)[y]) > 0.6
    # the cluster E_T of a photon is close to its true pT
    ratio = np.asarray(arr.ph_pt)[y] / np.asarray(arr.truth_pt)[y]
    assert 0.85 < np.median(ratio) < 1.05


def test_photon_determinism_across_workers(photons, tmp_path):
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from calolab.app import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "generate", ["sample=photons", "n_events=60", "chunk_size=30", "progress=false", "seed=11", "workers=2"]
        )
    with open_dict(cfg):
        cfg.out = str(tmp_path / "w2")
    run_generation(cfg, "photons")
    a, b = read(photons, "photons"), read(tmp_path / "w2", "photons")
    for field in PHOTON_BRANCHES:
        assert np.array_equal(np.asarray(a[field]), np.asarray(b[field])), field
    ma = json.loads((photons / "manifest.json").read_text())
    mb = json.loads((tmp_path / "w2" / "manifest.json").read_text())
    assert ma["workers"] == 1 and mb["workers"] == 2
    assert [f["n_signal"] for f in ma["files"]] == [f["n_signal"] for f in mb["files"]]


def test_different_seed_different_events(generate_cfg):
    a = generate_cfg("minbias", n_events=5, overrides=["seed=1"])
    b = generate_cfg("minbias", n_events=5, out=None, overrides=["seed=2"])
    b.out = str(a.out) + "-2"
    run_generation(a, "minbias")
    run_generation(b, "minbias")
    pa, pb = read(a.out, "particles").part_pt, read(b.out, "particles").part_pt
    assert ak.num(pa, axis=1).tolist() != ak.num(pb, axis=1).tolist()


def test_wjets_physics_and_schema(generate_cfg):
    cfg = generate_cfg("wjets", n_events=40)
    run_generation(cfg, "wjets")
    arr = read(cfg.out, "jets")
    assert JET_BRANCHES <= set(arr.fields)
    y = np.asarray(arr.truth_label) == 1
    pt = np.asarray(arr.jet_pt)
    assert pt.min() >= 250_000 and pt.max() <= 300_000
    m = np.asarray(arr.jet_m)
    # W jets peak at the W mass, QCD jets are lighter
    assert 65_000 < np.median(m[y]) < 95_000
    assert np.median(m[~y]) < np.median(m[y])
    # two prongs: lower tau21
    assert np.median(np.asarray(arr.jet_tau21)[y]) < np.median(np.asarray(arr.jet_tau21)[~y])
    # constituents add up to the jet (MeV), and nothing is pileup at mu = 0
    sum_pt = np.asarray(ak.sum(arr.const_pt, axis=1))
    assert np.all(sum_pt >= 0.9 * pt)
    assert not ak.any(arr.const_is_pileup)
    assert np.array_equal(np.asarray(ak.num(arr.const_pt, axis=1)), np.asarray(arr.jet_nconst))


def test_qgjets_gluons_have_more_constituents(generate_cfg):
    cfg = generate_cfg("qgjets", n_events=40)
    run_generation(cfg, "qgjets")
    arr = read(cfg.out, "jets")
    y = np.asarray(arr.truth_label) == 1
    n = np.asarray(arr.jet_nconst)
    assert np.mean(n[~y]) > 1.2 * np.mean(n[y])
    assert np.abs(np.asarray(arr.jet_eta)).max() < 2.5
    assert np.asarray(arr.jet_pt).min() >= 500_000


def test_pileup_overlay_flags_constituents_and_records_mu(generate_cfg):
    cfg = generate_cfg("wjets", n_events=12, overrides=["pileup.mu=30", "pileup.pool_size=60"])
    manifest = run_generation(cfg, "wjets")
    arr = read(cfg.out, "jets")
    assert np.all(np.asarray(arr.mu) == 30)
    frac = float(ak.mean(arr.const_is_pileup))
    assert 0.1 < frac < 0.95
    assert manifest["pileup"]["mu"] == 30
