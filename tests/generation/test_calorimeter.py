"""Tests of the parametrised EM barrel: window shapes, energy bookkeeping, physics trends, noise, config."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy import stats

from calolab.errors import CalolabError, ConfigError
from calolab.generation.calorimeter import EMCalorimeter
from calolab.generation.geometry import LAYER_NAMES, wrap_phi
from calolab.generation.showers import gflash_longitudinal, normal_quantile, sample_em_spots
from calolab.physics.shower_shapes import compute_shower_shapes

MASSES = {22: 0.0, 11: 0.000511, 211: 0.13957, 13: 0.10566, 14: 0.0, 2112: 0.93957}
CHARGES = {22: 0.0, 11: -1.0, -11: 1.0, 211: 1.0, 13: -1.0, 14: 0.0, 2112: 0.0}
QUIET = {"noise_mev": [0, 0, 0, 0], "pileup_noise_mev": [0, 0, 0, 0]}


def particles(counts, e, eta, phi, pid) -> ak.Array:
    """Jagged particle records: ``counts`` per candidate, flat arrays of the particles' values."""
    e, eta, phi = (np.asarray(a, float) for a in (e, eta, phi))
    pid = np.broadcast_to(np.asarray(pid, np.int32), e.shape)
    m = np.array([MASSES[abs(int(p))] for p in pid])
    q = np.array([CHARGES.get(int(p), -CHARGES[abs(int(p))]) for p in pid], np.float32)
    pt = np.sqrt(np.maximum(e**2 - m**2, 0.0)) / np.cosh(eta)
    rec = ak.zip({"pt": pt, "eta": eta, "phi": phi, "e": e, "m": m, "pid": pid, "charge": q})
    return ak.unflatten(rec, np.asarray(counts))


def single(n, e, pid, eta=0.31, phi=0.52, seed_offset=0.0):
    """n candidates with one particle each, seeded at the particle (plus an offset)."""
    eta, phi = np.full(n, eta), np.full(n, phi)
    return particles(np.ones(n, int), np.full(n, e), eta, phi, pid), eta + seed_offset, phi


def run(cal, parts, eta, phi, mu=0.0, seed=1):
    return cal.simulate(parts, eta, phi, np.full(len(eta), float(mu)), np.random.default_rng(seed))


def test_output_shapes_and_dtypes():
    n = 7
    parts = particles([2, 0, 1, 3, 1, 1, 1], np.full(9, 20.0), np.full(9, 0.4), np.full(9, -1.0), 22)
    out = run(EMCalorimeter(), parts, np.full(n, 0.4), np.full(n, -1.0))
    shapes = {"EMB1": (56, 3), "EMB2": (7, 11), "EMB3": (4, 11), "TileBar0": (2, 3)}
    for layer, shape in shapes.items():
        assert out[f"cells_{layer}"].shape == (n, *shape)
        assert out[f"cells_{layer}"].dtype == np.float32
    for key in ("cl_eta", "cl_phi", "cl_e", "cl_et"):
        assert out[key].shape == (n,) and np.all(np.isfinite(out[key]))
    assert out["is_unhealthy"].dtype == bool and not out["is_unhealthy"].any()
    custom = EMCalorimeter(windows={"EMB1": [40, 2], "EMB2": [9, 9], "EMB3": [5, 9], "TileBar0": [3, 3]})
    assert run(custom, parts, np.full(n, 0.4), np.full(n, -1.0))["cells_EMB2"].shape == (n, 9, 9)


def test_windows_are_aligned_on_the_hottest_middle_cell():
    n, rng = 200, np.random.default_rng(11)
    eta, phi = rng.uniform(-1.3, 1.3, n), rng.uniform(-np.pi, np.pi, n)
    parts = particles(np.ones(n, int), np.full(n, 30.0), eta, phi, 22)
    # seeds up to 1.5 middle cells off: the search recentres the window
    out = run(EMCalorimeter(**QUIET), parts, eta + rng.uniform(-0.035, 0.035, n), phi + rng.uniform(-0.035, 0.035, n))

    def hottest(layer):
        cells = out[f"cells_{layer}"]
        return np.unravel_index(np.argmax(cells.reshape(n, -1), axis=1), cells.shape[1:])

    assert np.all(hottest("EMB2")[0] == 3) and np.all(hottest("EMB2")[1] == 5)
    strip, strip_phi = hottest("EMB1")
    early = out["cells_EMB1"].sum(axis=(1, 2)) > 0.1 * out["cl_e"]  # not converted behind the strips
    assert early.mean() > 0.8
    # the 8 strips under the hottest middle cell, +-1 when the photon hits its edge
    assert np.all((strip[early] >= 23) & (strip[early] <= 32)) and np.all(strip_phi[early] == 1)
    assert np.all(np.abs(wrap_phi(out["cl_phi"].astype(float) - phi)) < 0.0125)
    assert np.all(np.abs(out["cl_eta"] - eta) < 0.0125)


def test_empty_batch():
    out = EMCalorimeter().simulate(None, np.zeros(0), np.zeros(0), np.zeros(0), np.random.default_rng(0))
    assert out["cells_EMB1"].shape == (0, 56, 3) and out["cl_e"].shape == (0,)


def expected_em_fraction(cal: EMCalorimeter, energy_gev: float, eta: float) -> float:
    """Longitudinal fraction of a photon's mean GFLASH profile inside EMB1-EMB3, by integration."""
    lon = gflash_longitudinal(np.array([energy_gev]), cal.z_eff, cal.critical_energy_mev)
    t_max, alpha = np.exp(lon.ln_t[0]), np.exp(lon.ln_alpha[0])
    edges = cal.stack.edges_x0 * np.cosh(eta)  # presampler back edge ... EMB3 back edge
    shift = stats.expon(scale=9.0 / 7.0).ppf((np.arange(2000) + 0.5) / 2000)  # conversion depth
    profile = stats.gamma(alpha, scale=t_max / (alpha - 1.0))
    return float(np.mean(profile.cdf(edges[-1] - shift) - profile.cdf(edges[0] - shift)))


def test_photon_energy_bookkeeping():
    cal = EMCalorimeter(**QUIET)
    out = run(cal, *single(300, 50.0, 22))
    measured = out["cl_e"].mean() / 50_000.0
    expected = expected_em_fraction(cal, 50.0, 0.31)
    assert 0.95 < expected < 1.0
    # lateral leakage out of the 7x11 window and shower fluctuations cost ~1-2%
    assert expected - 0.03 < measured < expected + 0.005
    tile = out["cells_TileBar0"].sum(axis=(1, 2)).mean() / 50_000.0
    assert 0.0 < tile < 0.02  # longitudinal leakage behind EMB3


def test_neutrino_deposits_nothing():
    out = run(EMCalorimeter(**QUIET), *single(20, 50.0, 14))
    for layer in LAYER_NAMES:
        assert not out[f"cells_{layer}"].any()
    assert not out["cl_e"].any()


def test_charged_pion_is_hadronic_and_photon_is_not():
    cal = EMCalorimeter()
    photon = run(cal, *single(300, 50.0, 22), seed=2)
    pion = run(cal, *single(300, 50.0, 211), seed=2)
    sh_photon, sh_pion = compute_shower_shapes(photon), compute_shower_shapes(pion)
    assert np.median(sh_photon["Rhad"]) < 0.02
    assert np.median(sh_pion["Rhad"]) > 0.1
    assert sh_pion["Rhad"].mean() > 10 * sh_photon["Rhad"].mean()

    def front_fraction(out):
        total = sum(out[f"cells_{k}"].sum(axis=(1, 2)) for k in LAYER_NAMES)
        return np.mean((out["cells_EMB1"].sum(axis=(1, 2)) + out["cells_EMB2"].sum(axis=(1, 2))) / total)

    assert front_fraction(photon) > 0.9
    assert front_fraction(pion) < 0.7


def test_pi0_like_pair_has_two_strip_maxima():
    n, cal = 300, EMCalorimeter()
    one = run(cal, *single(n, 20.0, 22), seed=3)
    pair_eta = np.repeat(0.31 + np.array([[-0.005, 0.005]]), n, axis=0).ravel()
    pair = particles(np.full(n, 2), np.full(2 * n, 10.0), pair_eta, np.full(2 * n, 0.52), 22)
    two = run(cal, pair, np.full(n, 0.31), np.full(n, 0.52), seed=3)
    sh_one, sh_two = compute_shower_shapes(one, one["cl_eta"]), compute_shower_shapes(two, two["cl_eta"])
    assert np.median(sh_one["Eratio"]) > 0.85
    assert np.median(sh_two["Eratio"]) < 0.6
    assert np.median(sh_two["wstot"]) > np.median(sh_one["wstot"]) + 0.5
    assert np.median(sh_two["DeltaE"]) > np.median(sh_one["DeltaE"])


def test_gflash_mean_depth_grows_with_log_energy():
    energies = np.array([2.0, 20.0, 200.0])
    kw = {"z_eff": 60.0, "critical_energy_mev": 11.0, "moliere_radius_cm": 3.8, "max_spots": 300}
    means = []
    for e in energies:
        spots = sample_em_spots(np.full(400, e), np.zeros(400), rng=np.random.default_rng(4), **kw)
        means.append(np.average(spots.depth, weights=spots.energy_mev))
    means = np.array(means)
    analytic = gflash_longitudinal(energies, 60.0, 11.0).mean_depth()
    np.testing.assert_allclose(means, analytic, rtol=0.08)
    steps = np.diff(means)  # per decade of energy: T = ln y - 0.812 grows by ln 10 = 2.3 X0
    assert np.all(steps > 1.5) and np.all(steps < 3.5)


def test_normal_quantile_matches_scipy():
    p = np.concatenate([np.geomspace(1e-12, 0.5, 2000), 1.0 - np.geomspace(1e-12, 0.5, 2000)])
    np.testing.assert_allclose(normal_quantile(p), stats.norm.ppf(p), rtol=1e-8, atol=1e-8)


def test_same_seed_same_output_and_different_seed_differs():
    n = 20
    parts = particles(
        np.full(n, 3), np.tile([30.0, 5.0, 8.0], n), np.full(3 * n, 0.2), np.full(3 * n, 1.0), [22, 211, 2112] * n
    )
    cal = EMCalorimeter(unhealthy_fraction=0.3)
    a, b = (
        run(cal, parts, np.full(n, 0.2), np.full(n, 1.0), seed=7),
        run(cal, parts, np.full(n, 0.2), np.full(n, 1.0), seed=7),
    )
    c = run(cal, parts, np.full(n, 0.2), np.full(n, 1.0), seed=8)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["cells_EMB2"], c["cells_EMB2"])


def empty(n):
    return particles(np.zeros(n, int), [], [], [], np.zeros(0, np.int32)), np.zeros(n), np.zeros(n)


def test_noise_rms_per_layer_matches_config():
    noise = {"EMB1": 10.0, "EMB2": 20.0, "EMB3": 30.0, "TileBar0": 40.0}
    out = run(EMCalorimeter(noise_mev=noise, pileup_noise_mev=[0, 0, 0, 0]), *empty(400))
    for layer, sigma in noise.items():
        cells = out[f"cells_{layer}"]
        assert cells.std() == pytest.approx(sigma, rel=0.05)
        assert abs(cells.mean()) < 4 * sigma / np.sqrt(cells.size)


def test_pileup_noise_grows_with_mu():
    cal = EMCalorimeter()
    quiet, busy = run(cal, *empty(400), mu=0.0), run(cal, *empty(400), mu=100.0)
    for layer in LAYER_NAMES:
        expected = np.hypot(cal.noise_mev[layer], cal.pileup_noise_mev[layer] * 10.0)
        assert busy[f"cells_{layer}"].std() == pytest.approx(expected, rel=0.05)
        assert busy[f"cells_{layer}"].std() > quiet[f"cells_{layer}"].std()


@pytest.mark.parametrize("phi", [np.pi - 0.004, -np.pi + 0.004])
def test_phi_wraparound(phi):
    cal = EMCalorimeter(**QUIET)
    reference = run(cal, *single(100, 50.0, 22, phi=0.52), seed=5)
    edge = run(cal, *single(100, 50.0, 22, phi=phi), seed=5)
    assert edge["cl_e"].mean() == pytest.approx(reference["cl_e"].mean(), rel=0.02)
    assert np.all(np.abs(wrap_phi(edge["cl_phi"].astype(float) - phi)) < 0.01)
    # seed just below +pi, photon just above -pi: the window straddles the boundary
    parts = particles(np.ones(100, int), np.full(100, 50.0), np.full(100, 0.31), np.full(100, -np.pi + 0.003), 22)
    across = run(cal, parts, np.full(100, 0.31), np.full(100, np.pi - 0.002), seed=5)
    assert across["cl_e"].mean() == pytest.approx(reference["cl_e"].mean(), rel=0.02)


def test_charged_particles_bend_and_loopers_vanish():
    cal = EMCalorimeter(**QUIET)
    pos = run(cal, *single(50, 10.0, -11, eta=0.0, phi=0.0, seed_offset=0.0), seed=6)
    neg = run(cal, *single(50, 10.0, 11, eta=0.0, phi=0.0), seed=6)
    # B along +z: positive charges turn to smaller phi; 10 GeV: ~0.035 + 0.035 - 0.027 rad
    assert np.median(pos["cl_phi"]) == pytest.approx(-0.042, abs=0.01)
    assert np.median(neg["cl_phi"]) == pytest.approx(0.042, abs=0.01)
    loopers = particles(np.ones(20, int), np.full(20, 0.3), np.zeros(20), np.zeros(20), 211)
    out = run(cal, loopers, np.zeros(20), np.zeros(20))
    assert not any(out[f"cells_{k}"].any() for k in LAYER_NAMES)


def test_unhealthy_candidates_differ_in_one_em_layer():
    n = 60
    args = single(n, 40.0, 22)
    healthy = run(EMCalorimeter(), *args, seed=9)
    sick = run(EMCalorimeter(unhealthy_fraction=1.0), *args, seed=9)
    assert sick["is_unhealthy"].all()
    changed = np.stack([np.any(sick[f"cells_{k}"] != healthy[f"cells_{k}"], axis=(1, 2)) for k in LAYER_NAMES])
    assert np.all(changed[:3].sum(axis=0) == 1) and not changed[3].any()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"noise_mev": {"EMB1": 13, "EMB2": -1, "EMB3": 41, "TileBar0": 75}},
            r"noise_mev\['EMB2'\] must be >= 0, but got -1",
        ),
        ({"radius_cm": 0.0}, r"radius_cm must be > 0, but got 0.0"),
        ({"max_spots": 0}, r"max_spots must be >= 1, but got 0"),
        ({"unhealthy_fraction": 1.5}, r"unhealthy_fraction must be <= 1, but got 1.5"),
        ({"windows": {"EMB1": [56, 3], "EMB2": [7, 11], "EMB3": [4, 11]}}, r"windows must have exactly the keys"),
        ({"windows": {"EMB1": [56, 3], "EMB2": [2, 11], "EMB3": [4, 11], "TileBar0": [2, 3]}}, r"windows\['EMB2'\]"),
        ({"layer_depths_x0": [4.3, 16.0]}, r"layer_depths_x0 must have 3 entries"),
        ({"pileup_noise_mev": "12"}, r"pileup_noise_mev must be a mapping"),
        ({"projective_depth": "yes"}, r"projective_depth must be true or false"),
        ({"sampling_term": float("nan")}, r"sampling_term must be a finite number"),
    ],
)
def test_bad_constructor_args_raise_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        EMCalorimeter(**kwargs)


def test_constructor_accepts_yaml_values():
    cfg = OmegaConf.create(
        "noise_mev: {EMB1: 13, EMB2: 34, EMB3: 41, TileBar0: 75}\n"
        "pileup_noise_mev: [3, 12, 6, 15]\n"
        "layer_depths_x0: {EMB1: 4.3, EMB2: 16, EMB3: 2}\n"
        "windows: {EMB1: [56, 3], EMB2: [7, 11], EMB3: [4, 11], TileBar0: [2, 3]}\n"
        "max_spots: 200\n"
    )
    cal = EMCalorimeter(**cfg)
    assert cal.windows["EMB2"] == (7, 11) and cal.noise_mev["EMB2"] == 34.0
    assert cal.pileup_noise_mev["TileBar0"] == 15.0 and cal.max_spots == 200


def test_bad_simulate_inputs_raise():
    cal, parts = EMCalorimeter(), particles([1, 1], [10.0, 10.0], [0.0, 0.0], [0.0, 0.0], 22)
    rng = np.random.default_rng(0)
    with pytest.raises(CalolabError, match="seed_phi must have shape"):
        cal.simulate(parts, np.zeros(2), np.zeros(3), np.zeros(2), rng)
    with pytest.raises(CalolabError, match="one entry per candidate"):
        cal.simulate(parts, np.zeros(3), np.zeros(3), np.zeros(3), rng)
    with pytest.raises(CalolabError, match="mu must be >= 0"):
        cal.simulate(parts, np.zeros(2), np.zeros(2), np.array([1.0, -1.0]), rng)
    with pytest.raises(CalolabError, match=r"lack the fields \['pid'\]"):
        cal.simulate(parts[["pt", "eta", "phi", "e", "m", "charge"]], np.zeros(2), np.zeros(2), np.zeros(2), rng)
