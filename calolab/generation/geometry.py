"""Cell geometry of the parametrised ATLAS LAr EM barrel and first Tile layer, and window placement.

Each layer is a projective grid in (eta, phi) covering the whole azimuth: cell ``(i, j)`` spans
``eta`` in ``[i, i + 1) * d_eta`` and ``phi + pi`` in ``[j, j + 1) * 2 pi / n_phi`` (``j`` taken
modulo ``n_phi``, which is how the wrap-around at phi = +-pi is handled). The granularities are
the ATLAS barrel ones (REFERENCE.md): strips EMB1 0.003125 x 2pi/64, middle EMB2 0.025 x 2pi/256,
back EMB3 0.05 x 2pi/256, TileBar0 and TileBar1 0.1 x 2pi/64, TileBar2 0.2 x 2pi/64. The barrel's eta edges are not modelled: the
grids extend in eta without end, so a window at |eta| ~ 1.4 is simply filled as if the barrel
went on. Because cells are projective, a transverse displacement ``d`` (cm) from a shower axis at
radius ``R`` moves a deposit by ``d_eta = d_eta_direction / R`` and ``d_phi = d_phi_direction / R``
at any eta (the 1/cosh(eta) of the longer flight path cancels the cosh(eta) of d eta / d theta).

Longitudinally (:class:`DepthStack`), a path crosses the presampler material, EMB1, EMB2, EMB3
and TileBar0 (and TileBar1, TileBar2 when simulated), with depths in X0 for the EM part and
interaction lengths for all of it.

A window is a block of ``n_eta x n_phi`` cells of one layer, given by its first global cell
index per candidate; :class:`Window` turns deposits into cell energies with one ``np.bincount``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: The four simulated layers, in depth order.
LAYER_NAMES = ("EMB1", "EMB2", "EMB3", "TileBar0")
#: The layers of the EM calorimeter (the cluster energy sums these).
EM_LAYERS = ("EMB1", "EMB2", "EMB3")
#: The three Tile barrel layers, in depth order (a calorimeter simulates the first one to three).
TILE_LAYERS = ("TileBar0", "TileBar1", "TileBar2")
#: All six barrel layers, in depth order (the pion sample's).
BARREL_LAYERS = (*EM_LAYERS, *TILE_LAYERS)


def wrap_phi(phi: np.ndarray) -> np.ndarray:
    """Wrap azimuthal angles into [-pi, pi)."""
    return np.mod(phi + np.pi, 2.0 * np.pi) - np.pi


@dataclass(frozen=True)
class LayerGrid:
    """The global cell grid of one layer.

    Attributes:
        name: layer name (one of :data:`LAYER_NAMES`).
        d_eta: cell size in eta.
        n_phi: number of cells around the full azimuth.
    """

    name: str
    d_eta: float
    n_phi: int

    @property
    def d_phi(self) -> float:
        """Cell size in phi (radians)."""
        return 2.0 * math.pi / self.n_phi

    def eta_index(self, eta: np.ndarray) -> np.ndarray:
        """Global eta index of the cells containing ``eta``."""
        return np.floor(np.asarray(eta) / self.d_eta).astype(np.int64)

    def phi_index(self, phi: np.ndarray) -> np.ndarray:
        """Global phi index (0 .. n_phi - 1) of the cells containing ``phi``, any phi accepted."""
        return np.floor((np.asarray(phi) + math.pi) * (1.0 / self.d_phi)).astype(np.int64) % self.n_phi


#: The ATLAS barrel granularities used for every layer.
GRIDS: dict[str, LayerGrid] = {
    "EMB1": LayerGrid("EMB1", 0.025 / 8, 64),
    "EMB2": LayerGrid("EMB2", 0.025, 256),
    "EMB3": LayerGrid("EMB3", 0.05, 256),
    "TileBar0": LayerGrid("TileBar0", 0.1, 64),
    "TileBar1": LayerGrid("TileBar1", 0.1, 64),
    "TileBar2": LayerGrid("TileBar2", 0.2, 64),
}


def aligned_start(centre: np.ndarray, cell: float, n: int) -> np.ndarray:
    """First cell index of the ``n``-cell run whose centre lies closest to ``centre``.

    ``centre`` and ``cell`` are in the same unit, measured from the grid origin. For odd ``n``
    the run is centred on the cell containing ``centre``; for even ``n`` it is split at the cell
    boundary nearest to ``centre``, which centres it best.
    """
    return np.floor(np.asarray(centre) / cell - n / 2.0 + 0.5).astype(np.int64)


@dataclass(frozen=True)
class Window:
    """An ``n_eta x n_phi`` block of one layer's cells per candidate.

    Attributes:
        grid: the layer's global grid.
        n_eta, n_phi: window size in cells.
        eta0: (N,) global eta index of the first row.
        phi0: (N,) global phi index (0 .. n_phi - 1) of the first column.
    """

    grid: LayerGrid
    n_eta: int
    n_phi: int
    eta0: np.ndarray
    phi0: np.ndarray

    @classmethod
    def centred_on(
        cls, grid: LayerGrid, shape: tuple[int, int], eta: np.ndarray, phi_from_minus_pi: np.ndarray
    ) -> Window:
        """The window of ``shape`` whose centre best matches the given centre position.

        Args:
            grid: the layer grid.
            shape: (n_eta, n_phi).
            eta: (N,) centre eta.
            phi_from_minus_pi: (N,) centre phi + pi (any multiple of 2 pi is fine).
        """
        n_eta, n_phi = shape
        eta0 = aligned_start(eta, grid.d_eta, n_eta)
        phi0 = aligned_start(phi_from_minus_pi, grid.d_phi, n_phi) % grid.n_phi
        return cls(grid, n_eta, n_phi, eta0, phi0)

    def centre(self) -> tuple[np.ndarray, np.ndarray]:
        """(N,) centre eta and centre phi + pi (not wrapped) of the window."""
        eta = (self.eta0 + self.n_eta / 2.0) * self.grid.d_eta
        phi = (self.phi0 + self.n_phi / 2.0) * self.grid.d_phi
        return eta, phi

    def deposit(self, event: np.ndarray, eta: np.ndarray, phi: np.ndarray, energy: np.ndarray) -> np.ndarray:
        """Sum point deposits into the window cells.

        Args:
            event: (S,) candidate index of each deposit.
            eta, phi: (S,) deposit position; deposits outside the window are dropped.
            energy: (S,) deposit energy.

        Returns:
            (N, n_eta, n_phi) float64 cell energies.
        """
        n = len(self.eta0)
        i = self.grid.eta_index(eta) - self.eta0[event]
        j = (self.grid.phi_index(phi) - self.phi0[event]) % self.grid.n_phi
        ok = (i >= 0) & (i < self.n_eta) & (j < self.n_phi)
        flat = (event[ok] * self.n_eta + i[ok]) * self.n_phi + j[ok]
        size = n * self.n_eta * self.n_phi
        cells = np.bincount(flat, weights=energy[ok], minlength=size).astype(np.float64, copy=False)
        return cells.reshape(n, self.n_eta, self.n_phi)


def search_hottest(
    grid: LayerGrid,
    shape: tuple[int, int],
    seed_eta: np.ndarray,
    seed_phi: np.ndarray,
    search: int,
    deposits: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    measure: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[Window, np.ndarray]:
    """Centre a window on the hottest cell within ``search`` cells of the seed.

    The deposits are summed once into a region ``2 search`` cells larger than the window and
    anchored on the seed cell, and turned into measured cells by ``measure`` (fluctuations,
    noise); the hottest measured cell of the region's central ``(2 search + 1)^2`` block becomes
    the window's central cell (index ``(n - 1) // 2`` along each axis) and the window is cut out
    of the region. Candidates without any positive energy there keep the seed cell.

    Args:
        grid: the layer grid (EMB2).
        shape: (n_eta, n_phi) of the window.
        seed_eta, seed_phi: (N,) seed directions.
        search: half-width of the search block in cells.
        deposits: (event, eta, phi, energy) arrays of the layer's deposits.
        measure: maps the (N, n_eta + 2 search, n_phi + 2 search) deposited energies to the
            measured ones; identity if None.

    Returns:
        The window and its (N, n_eta, n_phi) measured cell energies.
    """
    n_eta, n_phi = shape
    c_eta, c_phi = (n_eta - 1) // 2, (n_phi - 1) // 2
    eta0 = grid.eta_index(seed_eta) - search - c_eta
    phi0 = (grid.phi_index(seed_phi) - search - c_phi) % grid.n_phi
    region = Window(grid, n_eta + 2 * search, n_phi + 2 * search, eta0, phi0).deposit(*deposits)
    if measure is not None:
        region = measure(region)
    block = region[:, c_eta : c_eta + 2 * search + 1, c_phi : c_phi + 2 * search + 1]
    n = len(eta0)
    flat = block.reshape(n, (2 * search + 1) ** 2)
    best = np.argmax(flat, axis=1)
    empty = flat[np.arange(n), best] <= 0.0
    a, b = np.divmod(best, 2 * search + 1)
    a[empty], b[empty] = search, search
    rows = a[:, None, None] + np.arange(n_eta)[None, :, None]
    cols = b[:, None, None] + np.arange(n_phi)[None, None, :]
    cells = region[np.arange(n)[:, None, None], rows, cols]  # (N, n_eta, n_phi)
    window = Window(grid, n_eta, n_phi, eta0 + a, (phi0 + b) % grid.n_phi)
    return window, cells


@dataclass(frozen=True)
class DepthStack:
    """Longitudinal layout of the calorimeter along a path at eta = 0.

    Depths along a path at pseudorapidity eta are divided by ``path_factor`` (cosh(eta) for
    projective depth, 1 otherwise) before comparing them with these edges.

    Attributes:
        presampler_x0: dead material in front of EMB1 (energy there is lost).
        depths_x0: (EMB1, EMB2, EMB3) depths.
        lambda_per_x0: interaction lengths per radiation length of the EM calorimeter.
        tile_depth_lambda: TileBar0 depth.
        deeper_tile_lambda: depths of the Tile layers behind TileBar0 (TileBar1, TileBar2), if
            simulated; empty for the four-layer calorimeter.
    """

    presampler_x0: float
    depths_x0: tuple[float, float, float]
    lambda_per_x0: float
    tile_depth_lambda: float
    deeper_tile_lambda: tuple[float, ...] = ()

    @property
    def n_layers(self) -> int:
        """Simulated layers: three EM and one to three Tile layers."""
        return 4 + len(self.deeper_tile_lambda)

    @property
    def edges_x0(self) -> np.ndarray:
        """Back edges of presampler, EMB1, EMB2, EMB3 in X0."""
        return np.cumsum([self.presampler_x0, *self.depths_x0])

    @property
    def edges_lambda(self) -> np.ndarray:
        """Back edges of presampler, EMB1, EMB2, EMB3 and the Tile layers in interaction lengths."""
        em = self.edges_x0 * self.lambda_per_x0
        return np.append(em, em[-1] + np.cumsum([self.tile_depth_lambda, *self.deeper_tile_lambda]))

    def layer_of_x0(self, depth_x0: np.ndarray) -> np.ndarray:
        """Layer of EM depths: -1 presampler (lost), 0-2 EMB1-3, 3 beyond EMB3 (to TileBar0)."""
        return np.searchsorted(self.edges_x0, depth_x0, side="right").astype(np.int8) - 1

    def layer_of_lambda(self, depth_lambda: np.ndarray) -> np.ndarray:
        """Layer of hadronic depths: -1 presampler, 0-2 EMB1-3, 3.. the Tile layers, n_layers beyond (lost)."""
        return np.searchsorted(self.edges_lambda, depth_lambda, side="right").astype(np.int8) - 1

    def path_before(self, stop_lambda: np.ndarray) -> np.ndarray:
        """(P, n_layers) fraction of EMB1, EMB2, EMB3 and each Tile layer crossed before ``stop_lambda``."""
        edges = self.edges_lambda
        front, back = edges[:-1], edges[1:]  # the layers' front and back edges
        crossed = np.clip(np.asarray(stop_lambda)[:, None] - front, 0.0, None)
        return np.minimum(crossed, back - front) / (back - front)
