"""Tests of pileup overlay, the parametrised detector and jet building.

Most tests build small synthetic particle arrays whose answer is known in closed form (a jet
mass from two prongs, a tower's energy from two photons); one small end-to-end test runs real
Pythia events through the whole chain.
"""

from __future__ import annotations

import math

import awkward as ak
import numpy as np
import pytest

from calolab.errors import CalolabError, ConfigError
from calolab.generation.detector import Detector
from calolab.generation.jets import JetBuilder
from calolab.generation.pileup import PileupPool

CHARGES = {22: 0.0, 11: -1.0, 211: 1.0, -211: -1.0, 111: 0.0, 130: 0.0, 2112: 0.0, 12: 0.0, 13: -1.0}
MASSES = {22: 0.0, 11: 0.000511, 211: 0.13957, -211: 0.13957, 130: 0.4976, 2112: 0.9396, 12: 0.0, 13: 0.1057}


def particle(pt: float, eta: float, phi: float, pid: int = 22, is_pileup: bool = False) -> dict:
    """One particle record with the energy implied by its mass."""
    m = MASSES.get(pid, 0.0)
    e = math.sqrt((pt * math.cosh(eta)) ** 2 + m**2)
    return {
        "pt": pt,
        "eta": eta,
        "phi": phi,
        "e": e,
        "m": m,
        "pid": pid,
        "charge": CHARGES.get(pid, 0.0),
        "is_pileup": is_pileup,
    }


def events(*event_lists: list[dict]) -> ak.Array:
    """An awkward array of events with the project's particle dtypes."""
    flat = [p for ev in event_lists for p in ev]
    counts = [len(ev) for ev in event_lists]
    columns = {
        "pt": np.array([p["pt"] for p in flat], dtype=np.float64),
        "eta": np.array([p["eta"] for p in flat], dtype=np.float64),
        "phi": np.array([p["phi"] for p in flat], dtype=np.float64),
        "e": np.array([p["e"] for p in flat], dtype=np.float64),
        "m": np.array([p["m"] for p in flat], dtype=np.float64),
        "pid": np.array([p["pid"] for p in flat], dtype=np.int32),
        "charge": np.array([p["charge"] for p in flat], dtype=np.float32),
        "is_pileup": np.array([p["is_pileup"] for p in flat], dtype=np.bool_),
    }
    return ak.unflatten(ak.zip(columns, depth_limit=1), np.asarray(counts, dtype=np.int64))


def constituents(*event_lists: list[tuple[float, float, float]]) -> ak.Array:
    """Massless neutral constituents from (pt, eta, phi) triples."""
    return events(*[[particle(*p) for p in ev] for ev in event_lists])


def pair_mass(pt1: float, eta1: float, phi1: float, pt2: float, eta2: float, phi2: float) -> float:
    return math.sqrt(2 * pt1 * pt2 * (math.cosh(eta1 - eta2) - math.cos(phi1 - phi2)))


# --------------------------------------------------------------------------------------------
# Pileup overlay


@pytest.fixture
def pool() -> PileupPool:
    # Three minimum-bias events of 3, 1 and 2 particles with distinct pT values.
    return PileupPool(
        events(
            [particle(1.0, 0.1, 0.2, 211), particle(2.0, -1.0, 3.0, 22), particle(3.0, 2.0, -3.0, 130)],
            [particle(4.0, 0.5, 1.0, -211)],
            [particle(5.0, -3.0, -1.0, 22), particle(6.0, 4.0, 0.0, 2112)],
        )
    )


@pytest.fixture
def hard() -> ak.Array:
    return events([particle(100.0, 0.0, 0.0, 211)] * 2, [particle(50.0, 1.0, 1.0, 22)])


def test_overlay_mu_zero_is_identity(pool: PileupPool, hard: ak.Array) -> None:
    out = pool.overlay(hard, 0.0, np.random.default_rng(1))
    assert out.to_list() == hard.to_list()
    assert not ak.any(out.is_pileup)


def test_overlay_mean_number_of_pileup_events_is_mu() -> None:
    single = PileupPool(events([particle(1.0, 0.0, 0.0, 22)]))  # one particle per pool event
    hard = events(*[[particle(100.0, 0.0, 0.0)] for _ in range(4000)])
    out = single.overlay(hard, 7.0, np.random.default_rng(2))
    n_pileup = np.asarray(ak.sum(out.is_pileup, axis=1))
    assert abs(n_pileup.mean() - 7.0) < 5 * math.sqrt(7.0 / 4000)
    assert abs(n_pileup.var() - 7.0) < 0.6  # Poisson: variance = mean


def test_overlay_flags_pileup_and_keeps_hard_first(pool: PileupPool, hard: ak.Array) -> None:
    out = pool.overlay(hard, 20.0, np.random.default_rng(3))
    assert out.fields == hard.fields
    n_hard = ak.num(hard)
    for ev_out, ev_hard, k in zip(out.to_list(), hard.to_list(), n_hard, strict=True):
        assert ev_out[:k] == ev_hard
        assert all(p["is_pileup"] for p in ev_out[k:])
        assert len(ev_out) > k
    assert ak.all(ak.num(out) - n_hard == ak.sum(out.is_pileup, axis=1))


def test_overlay_rotation_keeps_pt_eta_and_shape() -> None:
    pool_event = [particle(1.0, 0.3, 0.5), particle(2.0, -1.2, 2.9), particle(3.0, 2.2, -2.0)]
    single = PileupPool(events(pool_event))
    out = single.overlay(events([], []), 30.0, np.random.default_rng(4))
    pt = ak.to_numpy(ak.flatten(out.pt)).reshape(-1, 3)
    eta = ak.to_numpy(ak.flatten(out.eta)).reshape(-1, 3)
    phi = ak.to_numpy(ak.flatten(out.phi)).reshape(-1, 3)
    np.testing.assert_array_equal(pt, np.tile([1.0, 2.0, 3.0], (len(pt), 1)))
    np.testing.assert_array_equal(eta, np.tile([0.3, -1.2, 2.2], (len(eta), 1)))
    assert np.all((phi >= -np.pi) & (phi < np.pi))
    rotation = np.mod(phi - np.array([0.5, 2.9, -2.0]), 2 * np.pi)  # one angle per copy
    np.testing.assert_allclose(np.cos(rotation - rotation[:, :1]), 1.0, atol=1e-12)
    assert rotation[:, 0].std() > 1.0  # copies are rotated by different random angles


def test_overlay_is_deterministic_for_a_seed(pool: PileupPool, hard: ak.Array) -> None:
    a = pool.overlay(hard, 10.0, np.random.default_rng(5)).to_list()
    b = pool.overlay(hard, 10.0, np.random.default_rng(5)).to_list()
    c = pool.overlay(hard, 10.0, np.random.default_rng(6)).to_list()
    assert a == b
    assert a != c


@pytest.mark.parametrize("mu", [-1.0, float("nan"), float("inf")])
def test_overlay_rejects_bad_mu(pool: PileupPool, hard: ak.Array, mu: float) -> None:
    with pytest.raises(ConfigError, match="mu"):
        pool.overlay(hard, mu, np.random.default_rng(0))


def test_pool_rejects_missing_fields_and_empty_pool() -> None:
    with pytest.raises(ConfigError, match="charge"):
        PileupPool(ak.Array([[{"pt": 1.0, "eta": 0.0, "phi": 0.0, "e": 1.0, "m": 0.0, "pid": 22}]]))
    with pytest.raises(ConfigError, match="at least one"):
        PileupPool(events())


# --------------------------------------------------------------------------------------------
# Detector


def test_detector_conserves_visible_energy_and_neutrinos_are_invisible() -> None:
    rng = np.random.default_rng(7)
    pids = [22, 211, -211, 130, 2112, 11]
    evs = []
    for _ in range(300):
        ev = [
            particle(rng.uniform(20, 80), rng.uniform(-4, 4), rng.uniform(-np.pi, np.pi), int(rng.choice(pids)))
            for _ in range(20)
        ]
        ev.append(particle(300.0, 0.5, 1.0, 12))  # a neutrino
        evs.append(ev)
    truth = events(*evs)
    reco = Detector().reconstruct(truth, rng)
    visible = np.asarray(ak.sum(truth.e, axis=1)) - 300.0 * math.cosh(0.5)
    measured = np.asarray(ak.sum(reco.e, axis=1))
    ratio = measured / visible
    assert abs(ratio.mean() - 1.0) < 0.01  # unbiased
    assert 0.003 < ratio.std() < 0.1  # smeared, by about the calorimeter resolution


def test_detector_resolution_matches_parametrisation() -> None:
    rng = np.random.default_rng(8)
    det = Detector(em_stochastic=0.10, em_constant=0.007)
    photons = events(*[[particle(100.0, 0.0, 0.5, 22)] for _ in range(4000)])
    e = ak.to_numpy(ak.flatten(det.reconstruct(photons, rng).e))
    expected = math.sqrt(0.10**2 / 100.0 + 0.007**2)
    assert len(e) == 4000
    assert abs(e.mean() / 100.0 - 1.0) < 3 * expected / math.sqrt(4000) + 1e-4
    assert abs(e.std() / 100.0 / expected - 1.0) < 0.05


def test_charged_particles_in_tracker_become_tracks() -> None:
    det = Detector(tower_e_min=0.0, tracker_eta_max=2.5, track_pt_min=0.5)
    truth = events(
        [
            particle(10.0, 1.0, 0.3, 211),  # track
            particle(10.0, 3.0, -1.0, 211),  # outside the tracker: a tower
            particle(0.3, -1.0, 2.0, -211),  # below track_pt_min: a tower
            particle(10.0, 0.0, 1.5, 13),  # muon in the tracker: track
            particle(10.0, 3.5, 1.5, 13),  # muon outside the tracker: invisible
        ]
    )
    reco = det.reconstruct(truth, np.random.default_rng(9))[0]
    tracks = reco[reco.charge != 0]
    towers = reco[reco.charge == 0]
    assert tracks.charge.to_list() == [1.0, -1.0]
    np.testing.assert_allclose(tracks.eta.to_list(), [1.0, 0.0])
    np.testing.assert_allclose(tracks.phi.to_list(), [0.3, 1.5])
    np.testing.assert_allclose(tracks.pt.to_list(), [10.0, 10.0], rtol=0.05)
    assert len(towers) == 2
    assert sorted(np.round(towers.eta.to_list())) == [-1.0, 3.0]
    assert ak.all(towers.m == 0)
    assert not ak.any(np.abs(towers.eta - 1.0) < 0.2)  # the track's energy is not in a tower


def test_tower_granularity_and_direction() -> None:
    det = Detector(tower_size=0.1, em_stochastic=0.0, em_constant=0.0, tower_e_min=0.0)
    assert (det.n_eta, det.n_phi) == (98, 63)
    # 63 phi bins from -pi: phi = 0 is the centre of bin 31, which spans +-0.0499.
    phi_low, phi_high = -np.pi + 31 * det.phi_width, -np.pi + 32 * det.phi_width
    assert phi_low < 0.01 < 0.04 < phi_high
    # Same tower (eta bin [0.0, 0.1)) vs neighbouring eta bins.
    same = [particle(10.0, 0.02, 0.01), particle(30.0, 0.08, 0.04)]
    apart = [particle(10.0, 0.05, 0.01), particle(30.0, 0.15, 0.01)]
    reco = det.reconstruct(events(same, apart), np.random.default_rng(10))
    assert ak.num(reco).to_list() == [1, 2]
    tower = reco[0][0]
    np.testing.assert_allclose(tower.e, 10.0 * math.cosh(0.02) + 30.0 * math.cosh(0.08), rtol=1e-12)
    e1, e2 = 10.0 * math.cosh(0.02), 30.0 * math.cosh(0.08)
    np.testing.assert_allclose(tower.eta, (e1 * 0.02 + e2 * 0.08) / (e1 + e2), rtol=1e-12)  # energy-weighted
    np.testing.assert_allclose(tower.phi, (e1 * 0.01 + e2 * 0.04) / (e1 + e2), rtol=1e-12)
    np.testing.assert_allclose(tower.pt, tower.e / math.cosh(tower.eta))
    assert sorted(reco[1].eta.to_list()) == pytest.approx([0.05, 0.15])


def test_tower_pileup_flag_follows_energy_majority() -> None:
    det = Detector(em_stochastic=0.0, em_constant=0.0)
    mostly_pileup = [particle(3.0, 0.51, 0.0, 22, True), particle(2.0, 0.52, 0.0, 22, False)]
    mostly_hard = [particle(2.0, 0.51, 0.0, 22, True), particle(3.0, 0.52, 0.0, 22, False)]
    reco = det.reconstruct(events(mostly_pileup, mostly_hard), np.random.default_rng(11))
    assert reco.is_pileup.to_list() == [[True], [False]]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"tower_size": 0.0}, "tower_size"),
        ({"eta_max": -1.0}, "eta_max"),
        ({"tracker_eta_max": 5.0}, "tracker_eta_max"),
        ({"em_stochastic": -0.1}, "em_stochastic"),
        ({"track_resolution": float("nan")}, "track_resolution"),
        ({"tower_e_min": -1.0}, "tower_e_min"),
    ],
)
def test_detector_rejects_bad_arguments(kwargs: dict, name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Detector(**kwargs)


def test_detector_requires_particle_fields() -> None:
    with pytest.raises(CalolabError, match="pid"):
        Detector().reconstruct(
            ak.Array([[{"pt": 1.0, "eta": 0.0, "phi": 0.0, "e": 1.0, "m": 0.0, "charge": 0.0}]]),
            np.random.default_rng(0),
        )


# --------------------------------------------------------------------------------------------
# Jets


def builder(**kwargs) -> JetBuilder:
    settings = {"radius": 1.0, "pt_min": 0.0, "pt_max": 10_000.0, "eta_max": 5.0}
    return JetBuilder(**(settings | kwargs))


def test_jet_mass_of_two_massless_prongs() -> None:
    prongs = (200.0, 0.1, 0.2, 100.0, 0.4, -0.2)
    _, jets = builder().build(constituents([prongs[:3], prongs[3:]]))
    assert jets.jet_nconst[0] == 2
    np.testing.assert_allclose(jets.jet_m[0], pair_mass(*prongs), rtol=1e-9)
    np.testing.assert_allclose(
        jets.jet_pt[0],
        math.hypot(200 * math.cos(0.2) + 100 * math.cos(-0.2), 200 * math.sin(0.2) + 100 * math.sin(-0.2)),
        rtol=1e-9,
    )


def test_leading_jet_is_the_hardest() -> None:
    ev = [(100.0, 0.0, 0.0), (300.0, 0.5, 3.0), (5.0, 0.55, 3.05)]
    soft = [(10.0, 1.0, 1.0)]  # a soft event in the batch, so that both jets above are candidates
    _, jets = builder(trim_radius=None).build(constituents(ev, soft))
    assert jets.jet_nconst.to_list() == [2, 1]
    np.testing.assert_allclose(jets.jet_pt.to_list(), [305.0, 10.0], rtol=1e-3)


def _prong(rng: np.random.Generator, pt: float, eta: float, phi: float, n: int, width: float) -> list:
    return [(pt / n, eta + rng.normal(0, width), phi + rng.normal(0, width)) for _ in range(n)]


def test_two_prong_jet_has_lower_tau21_than_diffuse_one_prong_jet() -> None:
    rng = np.random.default_rng(12)
    two_prong = _prong(rng, 150.0, -0.25, 0.0, 10, 0.02) + _prong(rng, 120.0, 0.25, 0.1, 10, 0.02)
    diffuse = _prong(rng, 270.0, 0.0, 0.0, 60, 0.25)
    _, jets = builder().build(constituents(two_prong, diffuse))
    tau21 = jets.jet_tau21.to_list()
    assert tau21[0] < 0.2
    assert tau21[1] > 0.5
    assert tau21[0] < 0.5 * tau21[1]


def test_tau21_is_zero_with_fewer_than_two_constituents_or_two_axes() -> None:
    _, jets = builder().build(constituents([(100.0, 0.0, 0.0)], [(100.0, 0.0, 0.0), (50.0, 0.5, 0.0)]))
    assert jets.jet_tau21.to_list() == [0.0, 0.0]


def test_trimming_removes_a_soft_far_subjet_and_keeps_a_hard_one() -> None:
    core = [(120.0, 0.0, 0.0), (80.0, 0.05, 0.05)]
    soft = (4.0, 0.6, 0.4)  # 2% of the jet pT, 0.72 away: a separate kt R=0.3 subjet
    hard = (30.0, -0.6, 0.0)  # 13%: kept
    _, trimmed = builder().build(constituents(core + [soft], core + [hard]))
    _, untrimmed = builder(trim_radius=None).build(constituents(core + [soft]))
    assert trimmed.jet_nconst.to_list() == [2, 3]
    assert untrimmed.jet_nconst.to_list() == [3]
    np.testing.assert_allclose(trimmed.jet_m[0], pair_mass(*core[0], *core[1]), rtol=1e-9)
    assert untrimmed.jet_m[0] > 2 * trimmed.jet_m[0]
    assert 4.0 not in trimmed.const_pt[0].to_list()
    assert 30.0 in trimmed.const_pt[1].to_list()


def test_window_cuts_mask_events() -> None:
    jb = builder(pt_min=250.0, pt_max=300.0, eta_max=2.0, trim_radius=None, mass_min=60.0, mass_max=100.0)

    def two_prong(pt: float, eta: float, dphi: float) -> list:
        return [(pt / 2, eta, -dphi / 2), (pt / 2, eta, dphi / 2)]

    mask, jets = jb.build(
        constituents(
            two_prong(270.0, 0.0, 0.6),  # m ~ 81: passes
            two_prong(240.0, 0.0, 0.6),  # pT too low (m ~ 72)
            two_prong(320.0, 0.0, 0.6),  # pT too high (m ~ 96)
            two_prong(270.0, 2.5, 0.6),  # |eta| too large
            two_prong(270.0, 0.0, 0.2),  # m ~ 27: too light
            two_prong(270.0, 0.0, 0.9),  # m ~ 121: too heavy
            [],  # no jet
        )
    )
    assert mask.dtype == np.bool_
    np.testing.assert_allclose(jets.jet_m[0], pair_mass(135.0, 0.0, -0.3, 135.0, 0.0, 0.3), rtol=1e-9)
    assert mask.tolist() == [True, False, False, False, False, False, False]
    assert math.isnan(jets.jet_pt[6]) and jets.jet_nconst[6] == 0 and len(jets.const_pt[6]) == 0


def test_rapidity_window_differs_from_eta_window_for_massive_jets() -> None:
    ev = [(100.0, 1.6, -0.4), (100.0, 1.9, 0.4)]
    _, jets = builder(trim_radius=None).build(constituents(ev))
    eta, y = float(jets.jet_eta[0]), float(jets.jet_y[0])
    assert y < eta
    cut = 0.5 * (y + eta)
    assert builder(trim_radius=None, eta_max=cut, use_rapidity=True).build(constituents(ev))[0].tolist() == [True]
    assert builder(trim_radius=None, eta_max=cut).build(constituents(ev))[0].tolist() == [False]


def test_constituent_lists_are_sorted_and_carry_charge_and_pileup() -> None:
    ev = [particle(50.0, 0.0, 0.0, 211), particle(100.0, 0.1, 0.1, 22), particle(20.0, -0.1, 0.1, 22, True)]
    _, jets = builder(trim_fcut=0.0).build(events(ev))
    assert jets.const_pt[0].to_list() == [100.0, 50.0, 20.0]
    assert jets.const_charge[0].to_list() == [0.0, 1.0, 0.0]
    assert jets.const_is_pileup[0].to_list() == [False, False, True]
    assert set(jets.fields) >= {
        "jet_pt", "jet_eta", "jet_phi", "jet_m", "jet_tau21", "jet_nconst",
        "const_pt", "const_eta", "const_phi", "const_charge", "const_is_pileup",
    }  # fmt: skip


def test_jets_across_the_phi_boundary() -> None:
    ev = [(100.0, 0.0, np.pi - 0.05), (100.0, 0.0, -np.pi + 0.05)]
    _, jets = builder().build(constituents(ev))
    assert jets.jet_nconst[0] == 2
    np.testing.assert_allclose(abs(jets.jet_phi[0]), np.pi, atol=1e-9)
    np.testing.assert_allclose(jets.jet_m[0], pair_mass(100.0, 0.0, 0.0, 100.0, 0.0, 0.1), rtol=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"radius": 0.0}, "radius"),
        ({"algorithm": "siscone"}, "algorithm"),
        ({"trim_radius": 1.5}, "trim_radius"),
        ({"trim_fcut": 1.2}, "trim_fcut"),
        ({"pt_min": -1.0}, "pt_min"),
        ({"pt_min": 300.0, "pt_max": 250.0}, "pt_max"),
        ({"eta_max": 0.0}, "eta_max"),
        ({"mass_min": 100.0, "mass_max": 50.0}, "mass_max"),
    ],
)
def test_jet_builder_rejects_bad_arguments(kwargs: dict, name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        builder(**kwargs)


# --------------------------------------------------------------------------------------------
# End to end with real Pythia events


def _pythia_particles(settings: list[str], n_events: int, seed: int) -> ak.Array:
    pythia8mc = pytest.importorskip("pythia8mc")
    pythia = pythia8mc.Pythia("", False)
    common = ["Beams:eCM = 13000.", "Next:numberCount = 0", "Print:quiet = on", "Random:setSeed = on"]
    for line in [*common, f"Random:seed = {seed}", *settings]:
        assert pythia.readString(line), line
    assert pythia.init()
    batch = pythia.nextBatch(n_events)
    prt = batch.prt[batch.prt.status > 0]
    flat = ak.flatten(prt)
    px, py, pz = (np.asarray(flat.p[c]) for c in ("px", "py", "pz"))
    pid = np.asarray(flat.id, dtype=np.int32)
    unique = np.unique(pid)
    charges = np.array([pythia.particleData.charge(int(i)) for i in unique], dtype=np.float32)
    pt = np.hypot(px, py)
    columns = {
        "pt": pt,
        "eta": np.arcsinh(pz / pt),
        "phi": np.arctan2(py, px),
        "e": np.asarray(flat.p.e),
        "m": np.asarray(flat.m),
        "pid": pid,
        "charge": charges[np.searchsorted(unique, pid)],
        "is_pileup": np.zeros(len(pt), dtype=np.bool_),
    }
    return ak.unflatten(ak.zip(columns, depth_limit=1), ak.num(prt))


def test_pythia_events_through_the_whole_chain() -> None:
    hard = _pythia_particles(["HardQCD:all = on", "PhaseSpace:pTHatMin = 250", "PhaseSpace:pTHatMax = 300"], 20, 3)
    pool = PileupPool(_pythia_particles(["SoftQCD:nonDiffractive = on"], 20, 4))
    rng = np.random.default_rng(13)
    with_pileup = pool.overlay(hard, 10.0, rng)
    reco = Detector().reconstruct(with_pileup, rng)
    mask, jets = builder(pt_min=200.0, pt_max=400.0, eta_max=2.0).build(reco)

    assert len(jets) == 20
    assert np.median(jets.jet_pt) > 200.0  # the leading jet carries the hard scatter
    assert mask.sum() >= 5
    assert np.all(np.isfinite(jets.jet_m[mask])) and np.all(jets.jet_m >= 0)
    tau21 = ak.to_numpy(jets.jet_tau21)
    assert np.all((tau21 >= 0) & (tau21 <= 1.0))
    # Pileup reaches the constituents, but most of the leading jet's pT is from the hard event.
    const_pt = ak.flatten(jets.const_pt)
    pileup_pt = ak.sum(const_pt[ak.flatten(jets.const_is_pileup)])
    assert 0 < pileup_pt < 0.2 * ak.sum(const_pt)
