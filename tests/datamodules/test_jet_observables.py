"""Observables from jet images: exact on hand-made pixels, and against the generator's branches."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot

from datamodules.jet_images import Constituents, JetImager
from datamodules.jet_observables import (
    charged_multiplicity,
    constituent_width,
    image_mass,
    image_multiplicity,
    image_pt,
    image_tau21,
    image_width,
    pixel_centres,
)

ETA, PHI = pixel_centres((9, 9), (0.45, 0.45))  # pixels of 0.1, centres -0.4 ... 0.4


def two_pixels(pt1=100.0, pt2=50.0, at1=(4, 4), at2=(7, 2)) -> np.ndarray:
    img = np.zeros((1, 9, 9), np.float32)
    img[0][at1], img[0][at2] = pt1, pt2
    return img


def test_mass_and_pt_of_two_pixels_are_exact():
    img = two_pixels()
    deta, dphi = ETA[7] - ETA[4], PHI[2] - PHI[4]
    mass2 = 2 * 100.0 * 50.0 * (np.cosh(deta) - np.cos(dphi))  # two massless particles
    assert image_mass(img, ETA, PHI)[0] == pytest.approx(np.sqrt(mass2), rel=1e-6)
    assert image_pt(img, ETA, PHI)[0] == pytest.approx(np.hypot(100 + 50 * np.cos(dphi), 50 * np.sin(dphi)), rel=1e-6)
    assert image_mass(np.zeros((2, 9, 9)), ETA, PHI).tolist() == [0.0, 0.0]


def test_width_multiplicity_and_tau21_of_simple_images():
    img = two_pixels(30.0, 10.0, (4, 4), (8, 4))  # 0.4 apart in eta; centroid 0.1 from the hard one
    assert image_width(img, ETA, PHI)[0] == pytest.approx((30 * 0.1 + 10 * 0.3) / 40, rel=1e-6)
    counts = (np.arange(81).reshape(1, 9, 9) % 3 == 0).astype(np.float32)
    assert image_multiplicity(counts)[0] == 27
    # two pixels: two axes describe them exactly (tau2 = 0); one pixel: tau1 = 0 -> 0
    assert image_tau21(img, ETA, PHI)[0] == 0.0
    assert image_tau21(two_pixels(30.0, 0.0), ETA, PHI)[0] == 0.0
    # three prongs: tau2 > 0, and a third prong far away raises tau21
    near = two_pixels(30.0, 30.0, (1, 4), (7, 4))
    near[0, 4, 5] = 3.0
    far = near.copy()
    far[0, 4, 5], far[0, 4, 8] = 0.0, 3.0
    t_near, t_far = image_tau21(np.concatenate([near, far]), ETA, PHI)
    assert 0 < t_near < t_far < 1


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 9, 9\)"):
        image_mass(np.zeros((3, 9, 8)), ETA, PHI)


def test_constituent_width_and_charged_multiplicity():
    counts = np.array([3, 0, 2])
    pt = np.array([10.0, 5.0, 5.0, 1.0, 0.0])
    eta = np.array([0.0, 0.2, -0.1, 1.0, 2.0])
    phi = np.array([3.1, 3.1, -3.1, 0.5, 0.0])
    charge = np.array([1, 0, -1, 1, 1])
    width = constituent_width(pt, eta, phi, counts, np.array([0.0, 0.0, 1.0]), np.array([3.1, 0.0, 0.5]))
    dr = np.hypot(0.0, 2 * np.pi - 6.2)  # phi -3.1 is 0.083 from 3.1
    assert width[0] == pytest.approx((5 * 0.2 + 5 * np.hypot(0.1, dr)) / 20)
    assert width[1] == 0.0 and width[2] == 0.0  # no constituents; the pT 0 one does not count
    assert charged_multiplicity(pt, charge, counts).tolist() == [2, 0, 1]


@pytest.fixture(scope="module")
def wjets(tmp_path_factory):
    """120 generated W/QCD jets (the generator's branches, FastJet's tau21), made once."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from calolab.app import CONF_DIR
    from calolab.generation.runner import run_generation

    out = tmp_path_factory.mktemp("jets") / "wjets"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("generate", ["sample=wjets", "n_events=120", "progress=false", "seed=5"])
    with open_dict(cfg):
        cfg.out = str(out)
    run_generation(cfg, "wjets")
    return uproot.concatenate(f"{out}/*.root:jets")


@pytest.mark.slow
def test_image_observables_follow_the_branches_on_generated_jets(wjets):
    a = wjets
    jets = Constituents.from_awkward(a.const_pt, a.const_eta, a.const_phi, a.const_charge)
    axis = ak.to_numpy(a.jet_eta), ak.to_numpy(a.jet_phi)
    # the W-tagging images: 25 x 25 pixels of 0.1, leading subjet centred, rotated, flipped
    im = JetImager(
        shape=(25, 25),
        half_width=(1.25, 1.25),
        channels=["pt", "count"],
        centre="leading_subjet",
        rotate="subleading_subjet",
        flip=True,
    )
    built = im.build(jets, *axis)
    pt_img, count_img = built.images[:, 0], built.images[:, 1]
    eta, phi = im.pixel_centres()
    jet_m, jet_pt = ak.to_numpy(a.jet_m), ak.to_numpy(a.jet_pt)

    # pixelisation and rotation cost little mass: against the massless constituents' own mass
    # to ~1%; the branch's mass also counts the tracks' pion masses (a few % more)
    sums = {k: ak.to_numpy(ak.sum(a.const_pt * f(v), axis=1)) for k, f, v in (
        ("e", np.cosh, a.const_eta), ("pz", np.sinh, a.const_eta), ("px", np.cos, a.const_phi), ("py", np.sin, a.const_phi))}  # fmt: skip
    massless = np.sqrt(np.maximum(sums["e"] ** 2 - sums["px"] ** 2 - sums["py"] ** 2 - sums["pz"] ** 2, 0))
    m_img = image_mass(pt_img, eta, phi)
    assert np.mean(m_img / massless) == pytest.approx(1.0, abs=0.02)
    assert np.mean(m_img / jet_m) == pytest.approx(1.0, abs=0.06)
    assert np.corrcoef(m_img, jet_m)[0, 1] > 0.95
    assert np.mean(image_pt(pt_img, eta, phi) / jet_pt) == pytest.approx(1.0, abs=0.03)

    tau21 = image_tau21(pt_img, eta, phi, r0=1.0)
    assert np.corrcoef(tau21, ak.to_numpy(a.jet_tau21))[0, 1] > 0.75
    y = ak.to_numpy(a.truth_label) == 1
    assert np.median(tau21[y]) < np.median(tau21[~y])  # W jets have two prongs

    width = constituent_width(jets.pt, jets.eta, jets.phi, jets.counts, *axis)
    assert np.corrcoef(image_width(pt_img, eta, phi), width)[0, 1] > 0.95
    n_img = image_multiplicity(count_img)
    np.testing.assert_array_equal(n_img, built.n_in_image)
    assert np.mean(n_img == ak.to_numpy(a.jet_nconst)) > 0.95  # a trimmed R=1.0 jet fits the image
