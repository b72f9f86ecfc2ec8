"""The jet-image builder on hand-made jets: pixels, channels, centring, rotation, flip, errors."""

from __future__ import annotations

import numpy as np
import pytest

from calolab.errors import ConfigError
from datamodules.jet_images import CHANNELS, Constituents, JetImager, pixel_centres, wrap_phi

ALL_CHANNELS = list(CHANNELS)


def one_jet(pt, eta, phi, charge=None) -> Constituents:
    pt = np.asarray(pt, np.float64)
    return Constituents(
        pt=pt,
        eta=np.asarray(eta, np.float64),
        phi=np.asarray(phi, np.float64),
        counts=np.array([len(pt)]),
        charge=None if charge is None else np.asarray(charge, np.float64),
    )


def build(imager: JetImager, jet: Constituents, axis=(0.0, 0.0)) -> np.ndarray:
    return imager.build(jet, np.array([axis[0]]), np.array([axis[1]])).images[0]


def pixel(x: float, y: float, imager: JetImager) -> tuple[int, int]:
    """The (eta, phi) pixel of a point at (x, y) from the image centre."""
    (h, w), (hx, hy) = imager.shape, imager.half_width
    return int(np.floor((x + hx) / (2 * hx / h))), int(np.floor((y + hy) / (2 * hy / w)))


def test_pixels_channels_and_phi_wrapping():
    """Around an axis at phi = 3.1: a constituent at phi = -3.1 is 0.083 away, not 6.2."""
    im = JetImager(shape=(5, 5), half_width=(0.25, 0.25), channels=ALL_CHANNELS, centre=None)
    jet = one_jet(
        pt=[100.0, 50.0, 20.0, 30.0, 0.0],
        eta=[1.0, 1.12, 0.83, 1.5, 1.0],  # the fourth is 0.5 away in eta: outside the image
        phi=[3.1, -3.1, 3.1, 3.1, 3.1],  # the fifth has pT 0: dropped
        charge=[0, 1, -1, 1, 1],
    )
    img = build(im, jet, axis=(1.0, 3.1))  # (C, eta, phi)
    assert img.shape == (5, 5, 5) and img.dtype == np.float32
    pt, charged_pt, neutral_pt, count, charged_count = img
    expected = np.zeros((5, 5))
    expected[2, 2], expected[3, 3], expected[0, 2] = 100.0, 50.0, 20.0
    np.testing.assert_allclose(pt, expected)
    assert pt.sum() == pytest.approx(170.0)  # the in-range constituents' pT
    np.testing.assert_allclose(charged_pt + neutral_pt, pt)
    assert neutral_pt[2, 2] == 100.0 and charged_pt[3, 3] == 50.0 and charged_pt[0, 2] == 20.0
    np.testing.assert_array_equal(count, expected > 0)
    assert charged_count.sum() == 2 and charged_count[2, 2] == 0


def test_many_jets_at_once_equal_one_at_a_time():
    rng = np.random.default_rng(3)
    counts = np.array([5, 0, 12, 1, 7])
    m = counts.sum()
    jets = Constituents(
        pt=rng.exponential(10.0, m),
        eta=rng.normal(0, 0.3, m),
        phi=wrap_phi(np.pi + rng.normal(0, 0.3, m)),
        counts=counts,
        charge=rng.choice([-1.0, 0.0, 1.0], m),
    )
    axes = (np.zeros(5), np.full(5, np.pi))
    im = JetImager(
        shape=(11, 11),
        half_width=(0.8, 0.8),
        channels=ALL_CHANNELS,
        centre="leading_subjet",
        rotate="subleading_subjet",
        flip=True,
        normalise=True,
    )
    together = im.build(jets, *axes)
    starts = np.cumsum(counts) - counts
    for j, (s, n) in enumerate(zip(starts, counts)):
        alone = im.build(
            Constituents(
                jets.pt[s : s + n], jets.eta[s : s + n], jets.phi[s : s + n], np.array([n]), jets.charge[s : s + n]
            ),
            axes[0][j : j + 1],
            axes[1][j : j + 1],
        )
        np.testing.assert_allclose(together.images[j], alone.images[0], atol=1e-6)
        assert together.n_in_image[j] == alone.n_in_image[0]
    assert not together.images[1].any() and together.n_in_image[1] == 0  # the empty jet
    order = np.array([3, 0, 4, 1, 2])
    reordered = im.build(jets, *axes, order=order)  # row k holds jet order[k]
    np.testing.assert_array_equal(reordered.images, together.images[order])
    np.testing.assert_array_equal(reordered.pt_in_image, together.pt_in_image[order])


def test_centroid_goes_to_the_centre():
    im = JetImager(shape=(9, 9), half_width=(0.45, 0.45), centre="centroid")
    img = build(im, one_jet(pt=[1.0, 3.0], eta=[-0.2, 0.2], phi=[0.0, 0.0]))[0]
    # the pT centroid is at eta = 0.1: the constituents move to -0.3 and +0.1
    assert img[pixel(-0.3, 0.0, im)] == 1.0 and img[pixel(0.1, 0.0, im)] == 3.0
    eta, _ = im.pixel_centres()
    assert (img.sum(axis=1) * eta).sum() == pytest.approx(0.0, abs=1e-9)


def test_leading_subjet_goes_to_the_centre():
    im = JetImager(shape=(13, 13), half_width=(0.65, 0.65), centre="leading_subjet", subjet_radius=0.3)
    # the hardest constituent and a neighbour 0.25 away form the leading subjet; the third is far
    jet = one_jet(pt=[10.0, 5.0, 8.0], eta=[0.2, 0.2, -0.4], phi=[0.1, 0.35, -0.3])
    img = build(im, jet)[0]
    cy = (10 * 0.1 + 5 * 0.35) / 15  # the subjet axis: (0.2, cy)
    assert img[pixel(0.0, 0.1 - cy, im)] == 10.0
    assert img[pixel(0.0, 0.35 - cy, im)] == 5.0
    assert img[pixel(-0.6, -0.3 - cy, im)] == 8.0


def test_subleading_subjet_points_down_and_flip_puts_more_pt_right():
    im = JetImager(
        shape=(13, 13), half_width=(0.65, 0.65), centre="leading_subjet", rotate="subleading_subjet", flip=False
    )
    # leading subjet at the axis, subleading 0.5 to the right (+eta), a soft one 0.5 below (-phi)
    jet = one_jet(pt=[10.0, 5.0, 1.0], eta=[0.0, 0.5, 0.0], phi=[0.0, 0.0, -0.5])
    img = build(im, jet)[0]
    assert img[6, 6] == 10.0
    assert img[pixel(0.0, -0.5, im)] == 5.0  # subleading straight below
    assert img[pixel(-0.5, 0.0, im)] == 1.0  # the soft one turned with it, to -eta
    flipped = build(JetImager(**{**vars(im), "flip": True}), jet)[0]
    assert flipped[pixel(0.5, 0.0, im)] == 1.0  # mirrored to +eta, where it holds more pT
    np.testing.assert_array_equal(flipped[:, :], img[::-1, :])


def test_principal_axis_turns_vertical_with_more_pt_below():
    im = JetImager(shape=(11, 11), half_width=(0.55, 0.55), centre=None, rotate="principal_axis")
    # on the diagonal eta = phi; more pT at +eta/+phi in one jet, at -eta/-phi in its mirror
    for sign in (1.0, -1.0):
        jet = one_jet(
            pt=[4.0, 1.0, 2.0], eta=[0.2 * sign, 0.1 * sign, -0.2 * sign], phi=[0.2 * sign, 0.1 * sign, -0.2 * sign]
        )
        img = build(im, jet)[0]
        assert img[5, :].sum() == pytest.approx(7.0)  # all on the centre eta row: vertical
        r = np.hypot(0.2, 0.2)
        assert img[pixel(0.0, -r, im)] == 4.0 and img[pixel(0.0, r, im)] == 2.0


def transformed(jet: Constituents, angle: float, mirror: bool, shift=(0.3, -2.9)) -> Constituents:
    """The jet turned by ``angle`` (and mirrored in eta) about its first constituent, then moved."""
    x, y = jet.eta - jet.eta[0], wrap_phi(jet.phi - jet.phi[0])
    if mirror:
        x = -x
    c, s = np.cos(angle), np.sin(angle)
    x, y = x * c - y * s, x * s + y * c
    return Constituents(jet.pt, x + shift[0], wrap_phi(y + shift[1]), jet.counts, jet.charge)


@pytest.mark.parametrize(
    ("centre", "rotate"), [("centroid", "principal_axis"), ("leading_subjet", "subleading_subjet")]
)
def test_images_do_not_depend_on_where_and_how_the_jet_lies(centre, rotate):
    """Centre + rotate + flip take out translations, rotations and reflections (up to float error)."""
    rng = np.random.default_rng(7)
    n = 25
    jet = one_jet(pt=rng.exponential(10.0, n) + 1.0, eta=rng.normal(0, 0.25, n), phi=rng.normal(0, 0.25, n))
    im = JetImager(shape=(21, 21), half_width=(1.05, 1.05), centre=centre, rotate=rotate, flip=True)
    ref = build(im, jet)
    for angle, mirror in ((0.7, False), (2.5, True), (-1.9, False)):
        moved = transformed(jet, angle, mirror)
        np.testing.assert_allclose(build(im, moved, axis=(0.3, -2.9)), ref, atol=1e-4)
    unrotated = JetImager(**{**vars(im), "rotate": None, "flip": False})
    assert not np.allclose(build(unrotated, transformed(jet, 0.7, False), axis=(0.3, -2.9)), build(unrotated, jet))


def test_normalise_divides_pt_channels_only():
    im = JetImager(
        shape=(9, 9), half_width=(0.45, 0.45), channels=["pt", "neutral_pt", "count"], centre=None, normalise=True
    )
    jet = one_jet(pt=[30.0, 10.0, 5.0, 7.0], eta=[0.0, 0.1, -0.1, 3.0], phi=[0.0, 0.1, 0.2, 0.0], charge=[0, 1, 0, 0])
    out = im.build(jet, np.zeros(1), np.zeros(1))
    pt, neutral, count = out.images[0]
    assert pt.sum() == pytest.approx(1.0)
    assert neutral.sum() == pytest.approx(35.0 / 45.0)
    assert count.sum() == 3.0  # the fourth is outside the image
    assert out.pt_in_image[0] == pytest.approx(45.0) and out.n_in_image[0] == 3


def test_pixel_centres_are_symmetric():
    eta, phi = pixel_centres((25, 4), (1.25, 0.4))
    np.testing.assert_allclose(eta, np.linspace(-1.2, 1.2, 25))
    np.testing.assert_allclose(phi, [-0.3, -0.1, 0.1, 0.3])


def test_unknown_channel_names_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown jet-image channel 'charged_ptt'") as err:
        JetImager(channels=["pt", "charged_ptt"])
    assert "did you mean 'charged_pt'" in str(err.value)
    for name in CHANNELS:
        assert repr(name) in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shape": [25]}, "shape must be"),
        ({"shape": [25, 0]}, "shape must be"),
        ({"half_width": [1.0, -1.0]}, r"half_width\[1\] must be > 0"),
        ({"half_width": [1.0, 4.0]}, "must be <= pi"),
        ({"centre": "centriod"}, "did you mean 'centroid'"),
        ({"rotate": "principal"}, "did you mean 'principal_axis'"),
        ({"channels": []}, "non-empty list"),
        ({"channels": ["pt", "pt"]}, "must not repeat"),
        ({"flip": "yes"}, "flip must be true or false"),
        ({"subjet_radius": 0}, "subjet_radius must be > 0"),
    ],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        JetImager(**kwargs)


def test_degenerate_jets():
    """No jets; a jet of pT-0 constituents only; a jet wholly outside the image: empty images."""
    im = JetImager(shape=(5, 5), half_width=(0.25, 0.25), channels=["pt", "count"], rotate="principal_axis", flip=True)
    empty = im.build(Constituents(*(np.zeros(0),) * 3, counts=np.zeros(0, np.int64)), np.zeros(0), np.zeros(0))
    assert empty.images.shape == (0, 2, 5, 5)
    jets = Constituents(
        pt=np.array([0.0, 0.0, 5.0, 1.0]),
        eta=np.array([0.0, 0.1, 0.0, 0.05]),
        phi=np.array([0.0, 0.0, 2.0, 0.0]),
        counts=np.array([2, 2]),
    )
    # centroid centring would move the far constituent to the centre: keep the axes
    out = JetImager(**{**vars(im), "centre": None}).build(jets, np.zeros(2), np.zeros(2))
    assert not out.images[0].any() and out.n_in_image[0] == 0 and out.pt_in_image[0] == 0
    assert out.images[1, 0].sum() == pytest.approx(1.0) and out.n_in_image[1] == 1  # the 5 at phi = 2 is out
