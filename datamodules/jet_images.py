"""Jet images from jagged constituents, vectorised over all jets of a chunk (no loop per jet).

:class:`JetImager` turns each jet's constituents (pT, eta, phi, charge) into an image of
``shape = (n_eta, n_phi)`` pixels spanning ``[-half_width, +half_width)`` in (eta, phi) around
the jet axis (phi wrapped), with one channel per name in :data:`CHANNELS` (total, charged and
neutral pT; all and charged counts, as in Komiske et al., arXiv:1612.01551). The preprocessing
of the jet-image papers (arXiv:1511.05190) is done on the constituents, before pixelisation,
so that nothing is interpolated:

- ``centre``: translate the pT-weighted centroid (``centroid``, as energyflow's ``pixelate``,
  the default) or the leading subjet (``leading_subjet``) to the centre; ``None`` keeps the
  jet axis there.
- ``rotate``: turn the principal axis of the pT distribution (``principal_axis``: the major
  eigenvector of the pT-weighted covariance of (eta, phi); of its two orientations the one
  with more pT at negative phi) or the direction from the leading to the subleading subjet
  (``subleading_subjet``, as 1511.05190: the subleading subjet directly below the leading one;
  jets without a second subjet use the principal axis) so that it points to negative phi
  (straight down with eta across and phi up).
- ``flip``: mirror eta so that the positive-eta half of the image holds at least as much pT
  as the negative-eta half (halves by pixel; an odd image's centre row belongs to neither).
- ``normalise``: divide the pT channels by the jet's pT inside the image (each image's pT
  channels then sum to 1; count channels are left as counts).

Subjets are approximated cheaply rather than clustered: the leading subjet is the pT-weighted
centroid of the constituents within ``subjet_radius`` of the hardest constituent, and the
subleading subjet is the hardest constituent outside that radius of the leading subjet (in
place of kt subjets of radius 0.3). On 200 generated W/QCD jets the leading axis lies within
0.05 of FastJet's leading kt subjet for 88% of jets, and the leading-to-subleading direction
within 0.2 rad of FastJet's for ~80%. Constituents with pT <= 0 are dropped, and so are those
outside the image after the preprocessing. Rotations are about the image centre and in the
(eta, phi) plane, which preserves masses to first order in the angles (as the papers' image
rotations do). Geometry is computed in float32 on blocks of jets that fit the CPU cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import awkward as ak
import numpy as np

from calolab.errors import ConfigError, check_number, suggest

#: channel name -> what each pixel sums over its constituents
CHANNELS = {
    "pt": "pT of all constituents",
    "charged_pt": "pT of charged constituents (charge != 0)",
    "neutral_pt": "pT of neutral constituents (charge == 0)",
    "count": "number of constituents",
    "charged_count": "number of charged constituents",
}
#: channels that hold pT (``normalise`` divides these by the jet's pT in the image)
PT_CHANNELS = ("pt", "charged_pt", "neutral_pt")
#: channels that need the constituents' charge
CHARGED_CHANNELS = ("charged_pt", "neutral_pt", "charged_count")
CENTRES = ("centroid", "leading_subjet")
TWO_PI = 2.0 * np.pi
#: constituents per block of :meth:`JetImager.build` (its temporaries then fit in the L2 cache)
BLOCK_CONSTITUENTS = 32768
ROTATIONS = ("principal_axis", "subleading_subjet")

__all__ = ["CENTRES", "CHANNELS", "ROTATIONS", "Constituents", "JetImager", "JetImages", "pixel_centres", "wrap_phi"]


def wrap_phi(dphi: np.ndarray) -> np.ndarray:
    """Azimuthal differences wrapped into [-pi, pi]."""
    return dphi - TWO_PI * np.round(np.asarray(dphi) * (1.0 / TWO_PI))


def pixel_centres(shape: Sequence[int], half_width: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """``(eta (n_eta,), phi (n_phi,))`` centres of the pixels of an image spanning +-half_width."""
    out = [(np.arange(int(n)) - (int(n) - 1) / 2) * (2.0 * float(h) / int(n)) for n, h in zip(shape, half_width)]
    return out[0], out[1]


@dataclass(frozen=True)
class Constituents:
    """Jagged constituents as flat arrays grouped by jet.

    Attributes:
        pt, eta, phi: (M,) per constituent, jets one after the other.
        counts: (n,) constituents per jet.
        charge: (M,) charges, or None when no channel or observable needs them.
    """

    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    counts: np.ndarray
    charge: np.ndarray | None = None

    @classmethod
    def from_awkward(cls, pt, eta, phi, charge=None) -> Constituents:
        """From awkward (or list-of-lists) arrays of one list per jet, all with equal counts."""
        arrays = [ak.Array(a) if not isinstance(a, ak.Array) else a for a in (pt, eta, phi)]
        counts = ak.to_numpy(ak.num(arrays[0], axis=1)).astype(np.int64)
        flat = [ak.to_numpy(ak.flatten(a)) for a in arrays]
        q = None if charge is None else ak.to_numpy(ak.flatten(ak.Array(charge)))
        return cls(*flat, counts=counts, charge=q)

    @property
    def n_jets(self) -> int:
        return len(self.counts)

    def jet_index(self) -> np.ndarray:
        """(M,) the jet of every constituent."""
        return np.repeat(np.arange(len(self.counts)), self.counts)


@dataclass
class JetImages:
    """A chunk of jet images and what the builder learnt on the way (rows in the output order).

    Attributes:
        images: (n, C, n_eta, n_phi) float32.
        n_in_image: (n,) constituents inside the image.
        pt_in_image: (n,) their pT sum (the ``normalise`` scale), in the constituents' unit.
    """

    images: np.ndarray
    n_in_image: np.ndarray
    pt_in_image: np.ndarray


class JetImager:
    """Builds preprocessed jet images from jagged constituents, many jets at once.

    Args:
        shape: ``(n_eta, n_phi)`` pixels.
        half_width: ``(eta, phi)`` half-widths of the image around its centre.
        channels: channel names (see :data:`CHANNELS`), in the image's channel order.
        centre: ``"centroid"``, ``"leading_subjet"`` or None (the jet axis).
        rotate: ``"principal_axis"``, ``"subleading_subjet"`` or None.
        flip: mirror eta so that the positive-eta half holds the larger pT.
        normalise: divide the pT channels by the jet's pT inside the image.
        subjet_radius: the cone radius of the approximate subjets (``leading_subjet``,
            ``subleading_subjet``).
    """

    def __init__(
        self,
        *,
        shape: Sequence[int] = (25, 25),
        half_width: Sequence[float] = (1.25, 1.25),
        channels: Sequence[str] = ("pt",),
        centre: str | None = "centroid",
        rotate: str | None = None,
        flip: bool = False,
        normalise: bool = False,
        subjet_radius: float = 0.3,
    ):
        if (
            isinstance(shape, str)
            or not isinstance(shape, Sequence)
            or len(shape) != 2
            or not all(isinstance(s, int | np.integer) and not isinstance(s, bool) and s >= 1 for s in shape)
        ):
            raise ConfigError(f"shape must be [n_eta, n_phi] of positive integers, but got {shape!r}")
        if isinstance(half_width, str) or not isinstance(half_width, Sequence) or len(half_width) != 2:
            raise ConfigError(f"half_width must be [eta, phi] half-widths of the image, but got {half_width!r}")
        half = tuple(check_number(f"half_width[{i}]", h, 0.0, low_open=True) for i, h in enumerate(half_width))
        if half[1] > np.pi:
            raise ConfigError(f"half_width[1] (phi) must be <= pi, but got {half_width[1]!r}")
        if isinstance(channels, str) or not isinstance(channels, Sequence) or not channels:
            raise ConfigError(f"channels must be a non-empty list of channel names, but got {channels!r}")
        for name in channels:
            if name not in CHANNELS:
                raise ConfigError(
                    f"unknown jet-image channel {name!r}{suggest(str(name), CHANNELS)}; valid channels are {list(CHANNELS)}"
                )
        if len(set(channels)) != len(channels):
            raise ConfigError(f"channels must not repeat a name, but got {list(channels)}")
        if centre is not None and centre not in CENTRES:
            raise ConfigError(
                f"centre must be one of {list(CENTRES)} or null, but got {centre!r}{suggest(str(centre), CENTRES)}"
            )
        if rotate is not None and rotate not in ROTATIONS:
            raise ConfigError(
                f"rotate must be one of {list(ROTATIONS)} or null, but got {rotate!r}{suggest(str(rotate), ROTATIONS)}"
            )
        for what, value in (("flip", flip), ("normalise", normalise)):
            if not isinstance(value, bool):
                raise ConfigError(f"{what} must be true or false, but got {value!r}")
        self.shape = (int(shape[0]), int(shape[1]))
        self.half_width = (float(half[0]), float(half[1]))
        self.channels = tuple(str(c) for c in channels)
        self.centre = centre
        self.rotate = rotate
        self.flip = flip
        self.normalise = normalise
        self.subjet_radius = float(check_number("subjet_radius", subjet_radius, 0.0, low_open=True))

    # -- description ------------------------------------------------------------------------------
    @property
    def needs_charge(self) -> bool:
        return any(c in CHARGED_CHANNELS for c in self.channels)

    @property
    def pixel_size(self) -> tuple[float, float]:
        """``(eta, phi)`` size of one pixel."""
        return 2 * self.half_width[0] / self.shape[0], 2 * self.half_width[1] / self.shape[1]

    def pixel_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """``(eta (n_eta,), phi (n_phi,))`` pixel centres relative to the image centre."""
        return pixel_centres(self.shape, self.half_width)

    def as_config(self) -> dict:
        """The JSON-able settings (for the cache digest and the preprocessing summary)."""
        return {
            "shape": list(self.shape),
            "half_width": list(self.half_width),
            "channels": list(self.channels),
            "centre": self.centre,
            "rotate": self.rotate,
            "flip": self.flip,
            "normalise": self.normalise,
            "subjet_radius": self.subjet_radius,
        }

    # -- building ------------------------------------------------------------------------------
    def build(
        self, constituents: Constituents, jet_eta: np.ndarray, jet_phi: np.ndarray, order: np.ndarray | None = None
    ) -> JetImages:
        """The images of ``n`` jets.

        Every step is a numpy pass over the flat constituents (grouped by jet) or a per-jet
        reduction of them (``reduceat``); the pixels are filled with ``np.add.at``. The jets are
        taken in blocks of about :data:`BLOCK_CONSTITUENTS` constituents, so that the
        temporaries stay in the CPU cache (three times faster than whole chunks).

        Args:
            constituents: the jets' constituents (charge needed for the charged/neutral channels).
            jet_eta, jet_phi: (n,) the jet axes the image coordinates start from.
            order: optionally, the jets' order in the output (row k holds jet ``order[k]``);
                each image is written straight to its row, which costs nothing, where
                reordering the constituents or the images would.

        Returns:
            :class:`JetImages` with (n, C, n_eta, n_phi) float32 images.
        """
        c = constituents
        n = c.n_jets
        if len(jet_eta) != n or len(jet_phi) != n:
            raise ValueError(f"expected {n} jet axes, but got {len(jet_eta)} eta and {len(jet_phi)} phi")
        if self.needs_charge and c.charge is None:
            raise ValueError(f"channels {list(self.channels)} need the constituents' charge, but none was given")
        counts = np.asarray(c.counts, np.int64)
        jet_eta, jet_phi = np.asarray(jet_eta, np.float32), np.asarray(jet_phi, np.float32)
        out = JetImages(
            images=np.zeros((n, len(self.channels), *self.shape), np.float32),
            n_in_image=np.zeros(n, np.int64),
            pt_in_image=np.zeros(n),
        )
        dest = np.arange(n)  # the output row of each jet
        if order is not None:
            dest[np.asarray(order)] = np.arange(n)
        ends = np.cumsum(counts)
        cuts = np.searchsorted(ends, np.arange(BLOCK_CONSTITUENTS, ends[-1] if n else 0, BLOCK_CONSTITUENTS), "right")
        bounds = [0, *np.unique(cuts[(cuts > 0) & (cuts < n)]).tolist(), n]
        for j0, j1 in zip(bounds[:-1], bounds[1:]):
            if j1 > j0:
                a0, a1 = int(ends[j0] - counts[j0]), int(ends[j1 - 1])
                part = Constituents(
                    c.pt[a0:a1],
                    c.eta[a0:a1],
                    c.phi[a0:a1],
                    counts[j0:j1],
                    None if c.charge is None else c.charge[a0:a1],
                )
                self._block(part, jet_eta[j0:j1], jet_phi[j0:j1], out, dest[j0:j1])
        return out

    def _block(self, c: Constituents, jet_eta: np.ndarray, jet_phi: np.ndarray, out: JetImages, rows: np.ndarray):
        """Build the images of a block of jets into ``out``'s ``rows`` (zeros on entry)."""
        n = c.n_jets
        counts = c.counts
        pt, eta, phi = (np.asarray(a, np.float32) for a in (c.pt, c.eta, c.phi))  # float32: half the traffic
        charge = None if c.charge is None else np.asarray(c.charge)
        if (pt <= 0).any():  # dropped before anything else
            keep = pt > 0
            counts = np.bincount(np.repeat(np.arange(n), counts)[keep], minlength=n)
            pt, eta, phi = pt[keep], eta[keep], phi[keep]
            charge = None if charge is None else charge[keep]
        seg = _Segments(counts)
        pt_sum = seg.sum(pt)

        x = eta - seg.spread(jet_eta)  # (M,) eta from the jet axis
        y = wrap_phi(phi - seg.spread(jet_phi))  # (M,) phi from the jet axis
        subjets = None
        if self.centre == "leading_subjet" or self.rotate == "subleading_subjet":
            subjets = self._subjets(x, y, pt, seg)
        if self.centre == "centroid":
            x -= seg.spread(_ratio(seg.sum(pt * x), pt_sum))
            y -= seg.spread(_ratio(seg.sum(pt * y), pt_sum))
        elif self.centre == "leading_subjet":
            x -= seg.spread(subjets[0])
            y -= seg.spread(subjets[1])

        oriented = None  # jets whose rotation leaves an up/down choice (principal axis)
        if self.rotate is not None:
            if self.rotate == "subleading_subjet":
                lx, ly, sx, sy, has_sub = subjets
                theta = np.arctan2(sy - ly, sx - lx)  # (n,) from the leading to the subleading subjet
                oriented = ~has_sub
            else:
                theta, oriented = np.zeros(n, np.float32), np.ones(n, bool)
            if oriented.any():
                theta = np.where(oriented, _principal_angle(x, y, pt, seg, pt_sum), theta)
            alpha = -0.5 * np.pi - theta  # turns direction theta to -phi
            cos_a, sin_a = seg.spread(np.cos(alpha)), seg.spread(np.sin(alpha))
            x, y = x * cos_a - y * sin_a, x * sin_a + y * cos_a

        h, w = self.shape
        n_ch, size = len(self.channels), h * w
        px, py = self.pixel_size
        fx = np.floor((x + self.half_width[0]) / px)  # (M,) pixel rows and columns, as floats
        fy = np.floor((y + self.half_width[1]) / py)
        inside = (fx >= 0) & (fx < h) & (fy >= 0) & (fy < w)
        # constituents outside the image keep their place (no copies) with weight 0 in every
        # sum, and add 0 to the first pixel of their jet's image
        all_in = bool(inside.all())
        kept = None if all_in else inside.astype(np.float32)
        pt_kept = pt if all_in else pt * kept

        # halves of the image, by pixel (an odd image's centre row/column belongs to neither)
        if oriented is not None and oriented.any():  # more pT at negative phi: else a half turn
            up = seg.sum(pt_kept * np.sign(2 * fy - (w - 1)))  # pT above - pT below
            t = seg.spread(oriented & (up > 0))
            fx += t * (h - 1 - 2 * fx)
            fy += t * (w - 1 - 2 * fy)
        if self.flip:
            right = seg.sum(pt_kept * np.sign(2 * fx - (h - 1)))  # pT right - pT left
            fx += seg.spread(right < 0) * (h - 1 - 2 * fx)

        out.n_in_image[rows] = counts if all_in else np.rint(seg.sum(kept)).astype(np.int64)
        out.pt_in_image[rows] = pt_in = seg.sum(pt_kept)
        pixel = fx * w + fy if all_in else (fx * w + fy) * kept
        index = (seg.spread(rows * (n_ch * size)) + pixel).astype(np.intp)  # (M,) into (n, C, h*w)
        values = pt_kept if not self.normalise else pt_kept * seg.spread(_ratio(np.ones(n, np.float32), pt_in))
        values = values.astype(np.float32, copy=False)
        ones = np.ones(len(pt), np.float32) if all_in else kept
        charged = None if charge is None else charge != 0
        images = out.images.reshape(-1)  # a view
        for k, name in enumerate(self.channels):
            where = index + k * size
            if name == "pt":
                np.add.at(images, where, values)
            elif name == "charged_pt":
                np.add.at(images, where[charged], values[charged])
            elif name == "neutral_pt":
                np.add.at(images, where[~charged], values[~charged])
            elif name == "count":
                np.add.at(images, where, ones)
            else:  # charged_count
                np.add.at(images, where[charged], ones[charged])

    def _subjets(self, x: np.ndarray, y: np.ndarray, pt: np.ndarray, seg: _Segments):
        """Approximate leading and subleading subjet axes.

        Returns:
            ``(lx, ly, sx, sy, has_sub)``: (n,) the leading subjet's axis (pT-weighted centroid of
            the constituents within ``subjet_radius`` of the hardest one), the subleading one's
            (the hardest constituent outside that radius of the leading axis; the leading axis
            where ``has_sub`` is False, i.e. no constituent lies outside).
        """
        r2 = self.subjet_radius**2
        lx, ly = _cone(x, y, pt, seg, r2)
        dx, dy = x - seg.spread(lx), y - seg.spread(ly)
        seed = seg.argmax(pt * (dx * dx + dy * dy >= r2))
        has_sub = seed >= 0
        sx, sy = lx.copy(), ly.copy()
        sx[has_sub], sy[has_sub] = x[seed[has_sub]], y[seed[has_sub]]
        return lx, ly, sx, sy, has_sub


class _Segments:
    """Per-jet reductions of flat per-constituent arrays grouped by jet (contiguous segments)."""

    def __init__(self, counts: np.ndarray):
        self.counts = counts
        self.n = len(counts)
        self.filled = counts > 0
        self.all_filled = bool(self.filled.all())
        self.starts = (np.cumsum(counts) - counts)[self.filled]  # of the non-empty jets

    def _reduce(self, ufunc: np.ufunc, values: np.ndarray, empty: float) -> np.ndarray:
        if self.all_filled:
            return ufunc.reduceat(values, self.starts) if self.n else np.zeros(0)
        out = np.full(self.n, empty, dtype=np.result_type(values, np.float32))
        if len(self.starts):
            out[self.filled] = ufunc.reduceat(values, self.starts)
        return out

    def sum(self, values: np.ndarray) -> np.ndarray:
        """(n,) per-jet sums (0 for empty jets)."""
        return self._reduce(np.add, values, 0.0)

    def spread(self, per_jet: np.ndarray) -> np.ndarray:
        """(M,) each jet's value repeated for its constituents."""
        return np.repeat(per_jet, self.counts)

    def argmax(self, values: np.ndarray) -> np.ndarray:
        """Index (into ``values``) of each jet's largest value; -1 where none is above 0.

        The first of equal maxima wins.
        """
        out = np.full(self.n, -1, np.int64)
        if not len(self.starts):
            return out
        best = self._reduce(np.maximum, values, 0.0)
        hit = np.flatnonzero(values == self.spread(best))
        hit_jet = np.repeat(np.arange(self.n), self.counts)[hit]
        first = np.ones(len(hit), bool)
        first[1:] = hit_jet[1:] != hit_jet[:-1]
        out[hit_jet[first]] = hit[first]
        out[best <= 0] = -1
        return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (in ``num``'s float type)."""
    return np.divide(num, den, out=np.zeros(len(den), np.result_type(num, np.float32)), where=den != 0)


def _principal_angle(x: np.ndarray, y: np.ndarray, pt: np.ndarray, seg: _Segments, pt_sum: np.ndarray) -> np.ndarray:
    """(n,) angle of the major axis of each jet's pT-weighted (x, y) covariance."""
    wx, wy = pt * x, pt * y
    mx, my = _ratio(seg.sum(wx), pt_sum), _ratio(seg.sum(wy), pt_sum)
    sxx = _ratio(seg.sum(wx * x), pt_sum) - mx * mx
    syy = _ratio(seg.sum(wy * y), pt_sum) - my * my
    sxy = _ratio(seg.sum(wx * y), pt_sum) - mx * my
    return 0.5 * np.arctan2(2.0 * sxy, sxx - syy)


def _cone(x: np.ndarray, y: np.ndarray, weight: np.ndarray, seg: _Segments, r2: float):
    """Per jet: the ``weight``-weighted centroid of the constituents within sqrt(r2) of the one
    of largest ``weight`` (constituents of weight 0 take no part); (0, 0) for jets without any."""
    seed = seg.argmax(weight)
    ok = seed >= 0
    sx, sy = np.zeros(seg.n, x.dtype), np.zeros(seg.n, y.dtype)
    sx[ok], sy[ok] = x[seed[ok]], y[seed[ok]]
    dx, dy = x - seg.spread(sx), y - seg.spread(sy)
    member = weight * (dx * dx + dy * dy < r2)
    total = seg.sum(member)
    return sx + _ratio(seg.sum(member * dx), total), sy + _ratio(seg.sum(member * dy), total)
