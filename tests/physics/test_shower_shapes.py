"""Tests of the ATLAS photon-ID shower shapes: hand-computed values, degenerate clusters, validation."""

from __future__ import annotations

import numpy as np
import pytest

from calolab.errors import CalolabError
from calolab.physics.shower_shapes import SHAPE_NAMES, CellShapeError, compute_shower_shapes

SHAPES = {"EMB1": (56, 3), "EMB2": (7, 11), "EMB3": (4, 11), "TileBar0": (2, 3)}


def zeros(n: int = 4) -> dict[str, np.ndarray]:
    return {f"cells_{k}": np.zeros((n, *s), np.float32) for k, s in SHAPES.items()}


def test_zero_clusters_give_documented_degenerate_values():
    out = compute_shower_shapes(zeros())
    assert set(out) == set(SHAPE_NAMES)
    for name, values in out.items():
        assert values.dtype == np.float32 and values.shape == (4,)
        np.testing.assert_array_equal(values, 0.0, err_msg=name)


def test_noise_only_and_negative_clusters_stay_finite():
    rng = np.random.default_rng(0)
    cells = {k: rng.normal(-20.0, 50.0, v.shape).astype(np.float32) for k, v in zeros(500).items()}
    cells["cells_EMB2"][:100] = -np.abs(cells["cells_EMB2"][:100])  # all-negative middle layers
    for name, values in compute_shower_shapes(cells, eta=rng.uniform(-1.3, 1.3, 500)).items():
        assert np.all(np.isfinite(values)), name


def test_middle_layer_ratios_and_width():
    cells = zeros(1)
    emb2 = cells["cells_EMB2"][0]
    emb2[3, 5] = 1000.0  # the hottest cell, at the window centre
    emb2[4, 5] = 500.0  # inside 3x3
    emb2[3, 7] = 200.0  # inside 3x7 and 3x5 (phi + 2), outside 3x3
    emb2[5, 5] = 300.0  # inside 7x7, outside 3x7 (eta + 2)
    out = compute_shower_shapes(cells)
    assert out["Reta"][0] == pytest.approx(1700.0 / 2000.0)
    assert out["Rphi"][0] == pytest.approx(1500.0 / 1700.0)
    # 3x5 eta profile: 1200 at offset 0, 500 at +1 (cells of 0.025)
    mean = 500.0 / 1700.0
    assert out["weta2"][0] == pytest.approx(0.025 * np.sqrt(mean - mean**2), rel=1e-5)


def test_rhad_is_the_hadronic_to_em_energy_ratio():
    cells = zeros(2)
    cells["cells_EMB2"][:, 3, 5] = 8000.0
    cells["cells_EMB1"][:, 28, 1] = 2000.0
    cells["cells_TileBar0"][:, 0, 1] = 500.0
    out = compute_shower_shapes(cells, eta=np.array([0.0, 1.2]))
    np.testing.assert_allclose(out["Rhad"], 0.05, rtol=1e-6)


def test_strip_variables_on_a_two_peak_profile():
    cells = zeros(1)
    strips = np.zeros(56)
    strips[[26, 27, 28, 29, 30]] = [100.0, 400.0, 1000.0, 300.0, 50.0]  # hottest strip 28
    strips[[31, 32, 33, 34]] = [150.0, 200.0, 400.0, 100.0]  # second maximum at 33, minimum 50 at 30
    cells["cells_EMB1"][0, :, 1] = strips
    out = compute_shower_shapes(cells)
    assert out["Eratio"][0] == pytest.approx(600.0 / 1400.0)
    assert out["DeltaE"][0] == pytest.approx(400.0 - 50.0)
    e3, e7 = 400.0 + 1000.0 + 300.0, 100.0 + 400.0 + 1000.0 + 300.0 + 50.0 + 150.0
    assert out["fside"][0] == pytest.approx((e7 - e3) / e3)
    offsets = np.arange(56) - 28
    central = (np.arange(56) >= 18) & (np.arange(56) < 38)  # 20 strips around the middle cell
    wstot = np.sqrt(np.sum(strips[central] * offsets[central] ** 2) / strips[central].sum())
    assert out["wstot"][0] == pytest.approx(wstot, rel=1e-5)
    assert out["ws3"][0] == pytest.approx(np.sqrt(700.0 / 1700.0), rel=1e-5)


def test_single_peak_has_eratio_one_and_no_delta_e():
    cells = zeros(1)
    cells["cells_EMB1"][0, 25:32, 0] = [10.0, 50.0, 300.0, 900.0, 250.0, 40.0, 5.0]
    out = compute_shower_shapes(cells)
    assert out["Eratio"][0] == 1.0 and out["DeltaE"][0] == 0.0


def test_bare_layer_keys_are_accepted():
    cells = {k.removeprefix("cells_"): v for k, v in zeros(3).items()}
    assert compute_shower_shapes(cells)["Reta"].shape == (3,)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c.update(cells_EMB2=np.zeros((4, 5, 5))),
            r"layer EMB2: expected shape \(N, >=7, >=7\), but got \(4, 5, 5\)",
        ),
        (lambda c: c.update(cells_EMB1=np.zeros((4, 56))), r"layer EMB1: expected shape"),
        (lambda c: c.update(cells_TileBar0=np.zeros((3, 2, 3))), r"layer TileBar0: expected 4 clusters"),
        (lambda c: c.pop("cells_EMB3"), r"layer EMB3: expected key 'cells_EMB3'"),
        (lambda c: c["cells_EMB2"].__setitem__((0, 0, 0), np.nan), r"layer EMB2: expected finite"),
    ],
)
def test_malformed_cells_raise(change, message):
    cells = zeros(4)
    change(cells)
    with pytest.raises(CellShapeError, match=message):
        compute_shower_shapes(cells)


def test_eta_shape_is_checked():
    with pytest.raises(CalolabError, match=r"eta: expected finite values of shape \(4,\)"):
        compute_shower_shapes(zeros(4), eta=np.zeros(3))
