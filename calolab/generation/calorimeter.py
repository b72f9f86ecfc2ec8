"""The parametrised ATLAS LAr EM barrel (+ first Tile layer) that turns particles into cell windows.

:class:`EMCalorimeter` takes, for a batch of N photon candidates, every final-state particle near
each candidate and returns fixed-size cell windows per layer (MeV, axis order eta, phi), centred on
the hottest middle-layer cell near the candidate, plus the cluster's position and energy. It is
vectorised over the whole batch: particles are flattened, showers become energy spots
(:mod:`calolab.generation.showers`) and spots are summed into cells with one ``np.bincount`` per
layer (:mod:`calolab.generation.geometry`).

Particles are treated by type: e+- and photons shower electromagnetically (an undecayed pi0 is
showered as one photon), muons leave MIP deposits, neutrinos nothing, every other particle is a
hadron (MIP until its first interaction if charged, then a hadronic shower starting at an
exponential depth in interaction lengths, with ``hadron_response`` x its available energy
visible: kinetic energy E - m for baryons, E + m for antibaryons). Charged particles are bent in
the solenoid, a circle up to the solenoid radius R_sol then a straight line to the calorimeter
radius R: Delta phi = -q (2 alpha - asin(sin(alpha) R_sol / R)), sin(alpha) = 0.3 B[T] R_sol[m] /
(2 pT[GeV]); particles with sin(alpha) >= 1 loop inside the tracker and deposit nothing.
Particles further from the seed than any window could reach (window half-size + seed search +
30 cm of lateral spread) are skipped. The EM layers' cells get sampling fluctuations
(:func:`~calolab.generation.showers.sampling_fluctuations`), then every layer's cells Gaussian
electronic noise and pileup noise of width ``pileup_noise_mev * sqrt(mu)``; set the pileup
coefficients to 0 when pileup particles are overlaid instead.

Six layers: given a list of Tile depths (``tile_depth_lambda: [1.5, 4.1, 1.8]``) the calorimeter
simulates TileBar0, TileBar1 and TileBar2 behind the EM barrel (the pion sample's six barrel
layers). Hadronic spots are then placed in the Tile layer of their depth, MIPs deposit
``tile_mip_mev`` per TileBar0 depth in each, and EM energy beyond EMB3 (deep photon leakage, the
EM part of a hadronic shower starting in the Tile) continues at ``tile_lambda_per_x0``
interaction lengths per X0 through the Tile layers. With one Tile layer all EM energy beyond
EMB3 is TileBar0's, as it always was.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import awkward as ak
import numpy as np

from calolab.errors import CalolabError, ConfigError, check_number
from calolab.generation.geometry import (
    EM_LAYERS,
    GRIDS,
    TILE_LAYERS,
    DepthStack,
    Window,
    search_hottest,
    wrap_phi,
)
from calolab.generation.showers import (
    PHOTON_CONVERSION_X0,
    Spots,
    hadron_em_fraction,
    sample_em_spots,
    sample_hadron_spots,
    sampling_fluctuations,
)

DEFAULT_LAYER_DEPTHS_X0 = MappingProxyType({"EMB1": 4.3, "EMB2": 16.0, "EMB3": 2.0})
DEFAULT_NOISE_MEV = MappingProxyType({"EMB1": 13.0, "EMB2": 34.0, "EMB3": 41.0, "TileBar0": 75.0})
DEFAULT_PILEUP_NOISE_MEV = MappingProxyType({"EMB1": 3.0, "EMB2": 12.0, "EMB3": 6.0, "TileBar0": 15.0})
DEFAULT_WINDOWS = MappingProxyType({"EMB1": (56, 3), "EMB2": (7, 11), "EMB3": (4, 11), "TileBar0": (2, 3)})
#: Absolute PDG ids leaving no signal.
INVISIBLE_PIDS = (12, 14, 16, 1000022, 1000039)
#: Absolute PDG ids showering electromagnetically.
EM_PIDS = (11, 22, 111)
PARTICLE_FIELDS = ("pt", "eta", "phi", "e", "m", "pid", "charge")
#: Lateral spread beyond which deposits are neglected when skipping far particles (cm).
LATERAL_REACH_CM = 30.0


class SimulationInputError(CalolabError, ValueError):
    """The particles or candidate arrays given to :meth:`EMCalorimeter.simulate` are malformed."""


def _integer(name: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer >= {lo}, but got {value!r}")
    if value < lo:
        raise ConfigError(f"{name} must be >= {lo}, but got {value!r}")
    return int(value)


def _per_layer(name: str, value: Any, layers: Sequence[str]) -> dict[str, Any]:
    """A per-layer setting given as a mapping by layer name or a list in layer order."""
    if isinstance(value, Mapping):
        got = set(map(str, value.keys()))
        if got != set(layers):
            raise ConfigError(f"{name} must have exactly the keys {list(layers)}, but got {sorted(got)}")
        return {k: value[k] for k in layers}
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigError(f"{name} must be a mapping {{layer: value}} or a list for {list(layers)}, but got {value!r}")
    if len(value) != len(layers):
        raise ConfigError(f"{name} must have {len(layers)} entries ({list(layers)}), but got {len(value)}")
    return dict(zip(layers, value, strict=True))


class EMCalorimeter:
    """Parametrised EM barrel + TileBar0 producing per-candidate cell windows (see module docstring).

    The material defaults are those of the ATLAS barrel accordion as a whole, not of lead: mass
    fractions Pb 0.65, steel 0.12, LAr 0.22 (1.5 mm Pb, 0.4 mm steel, 2 x 2.1 mm LAr per gap)
    give X0 ~ 1.96 cm, E_c ~ 11 MeV, R_M ~ 3.8 cm and GFLASH's Z_eff = sum w_i Z_i ~ 60. With
    pure-lead values (Z 82, E_c 7.4 MeV, R_M 1.6 cm) photon showers come out far narrower than
    ATLAS measures (Reta ~ 0.99, fside ~ 0.04 instead of ~ 0.96 and ~ 0.1-0.3).

    Args:
        radius_cm: radius of the calorimeter front; converts transverse cm to (eta, phi).
        moliere_radius_cm: effective Moliere radius (see above).
        critical_energy_mev: effective critical energy E_c.
        z_eff: effective atomic number (GFLASH's Z).
        presampler_x0: material in front of EMB1 at eta = 0; shower energy there is lost.
        layer_depths_x0: EMB1, EMB2, EMB3 depths at eta = 0 (X0); EM energy beyond EMB3 goes
            to TileBar0 (the cryostat between them is not modelled).
        noise_mev: electronic noise sigma per layer (EMB1, EMB2, EMB3, TileBar0).
        pileup_noise_mev: pileup noise coefficient per layer, sigma_pu = coeff * sqrt(mu).
        sampling_term: EM stochastic term a (resolution a / sqrt(E[GeV])), applied per EM cell
            as a Gamma of mean E and variance a^2 E.
        max_spots: spot cap of a 10 GeV EM shower; the cap scales as sqrt(E / 10 GeV) (so 300
            gives ~670 spots at 50 GeV, where GFLASH's own count is ~11 000).
        windows: [n_eta, n_phi] window size per layer.
        unhealthy_fraction: fraction of candidates given a dead cell near the core of one EM
            layer or one EM layer shifted by one cell (half each).
        seed_search_cells: the window's central EMB2 cell is the hottest within this many cells
            of the seed cell in eta and phi.
        projective_depth: scale the path through every layer by cosh(eta) (cylindrical layers).
        bfield_tesla: solenoid field.
        solenoid_radius_cm: radius up to which charged particles curve.
        mip_mev_per_x0: energy a MIP deposits per X0 of EM calorimeter (dE/dx of the mixture
            ~ 10 MeV per X0).
        tile_mip_mev: energy a MIP deposits crossing TileBar0 at eta = 0.
        lambda_per_x0: interaction lengths per X0 in the EM calorimeter (0.05: the ~24 X0 of
            presampler material and EM layers make ~1.2 lambda).
        tile_depth_lambda: TileBar0 depth in interaction lengths; hadronic energy beyond is lost.
            Or a list of one to three depths: TileBar0, TileBar1, TileBar2 (the layers simulated;
            ``noise_mev``, ``pileup_noise_mev`` and ``windows`` then name each of them).
        tile_lambda_per_x0: interaction lengths per X0 in the Tile (iron/scintillator: X0 ~ 2 cm,
            lambda ~ 21 cm); places EM energy in the Tile layers when there are several.
        hadron_response: EM-scale response h/e to the non-EM part of hadronic showers (their
            EM part, Groom's f_em, is seen at 1), giving pi/e ~ 0.85 at 50 GeV.
        hadron_stochastic_term: hadronic stochastic term a in a / sqrt(E[GeV]).
        hadron_radius_cm: lateral scale of the non-EM part of hadronic showers.
        hadron_spots: spots per hadronic shower (non-EM part).

    Raises:
        ConfigError: an argument is out of range, naming it, the range and the value.
    """

    def __init__(
        self,
        *,
        radius_cm: float = 150.0,
        moliere_radius_cm: float = 3.8,
        critical_energy_mev: float = 11.0,
        z_eff: float = 60.0,
        presampler_x0: float = 2.0,
        layer_depths_x0: Mapping[str, float] | Sequence[float] = DEFAULT_LAYER_DEPTHS_X0,
        noise_mev: Mapping[str, float] | Sequence[float] = DEFAULT_NOISE_MEV,
        pileup_noise_mev: Mapping[str, float] | Sequence[float] = DEFAULT_PILEUP_NOISE_MEV,
        sampling_term: float = 0.11,
        max_spots: int = 300,
        windows: Mapping[str, Sequence[int]] | Sequence[Sequence[int]] = DEFAULT_WINDOWS,
        unhealthy_fraction: float = 0.0,
        seed_search_cells: int = 2,
        projective_depth: bool = True,
        bfield_tesla: float = 2.0,
        solenoid_radius_cm: float = 115.0,
        mip_mev_per_x0: float = 10.0,
        tile_mip_mev: float = 300.0,
        lambda_per_x0: float = 0.05,
        tile_depth_lambda: float | Sequence[float] = 1.5,
        tile_lambda_per_x0: float = 0.1,
        hadron_response: float = 0.7,
        hadron_stochastic_term: float = 0.5,
        hadron_radius_cm: float = 5.0,
        hadron_spots: int = 16,
    ):
        self.radius_cm = check_number("radius_cm", radius_cm, 0.0, low_open=True)
        self.moliere_radius_cm = check_number("moliere_radius_cm", moliere_radius_cm, 0.0, low_open=True)
        self.critical_energy_mev = check_number("critical_energy_mev", critical_energy_mev, 0.0, low_open=True)
        self.z_eff = check_number("z_eff", z_eff, 1.0, 100.0)
        self.presampler_x0 = check_number("presampler_x0", presampler_x0, 0.0)
        tiles = self._tile_depths(tile_depth_lambda)
        #: the simulated layers, in depth order
        self.layers = (*EM_LAYERS, *TILE_LAYERS[: len(tiles)])
        depths = _per_layer("layer_depths_x0", layer_depths_x0, EM_LAYERS)
        self.layer_depths_x0 = {
            k: check_number(f"layer_depths_x0[{k!r}]", v, 0.0, low_open=True) for k, v in depths.items()
        }
        noise = _per_layer("noise_mev", noise_mev, self.layers)
        self.noise_mev = {k: check_number(f"noise_mev[{k!r}]", v, 0.0) for k, v in noise.items()}
        pileup = _per_layer("pileup_noise_mev", pileup_noise_mev, self.layers)
        self.pileup_noise_mev = {k: check_number(f"pileup_noise_mev[{k!r}]", v, 0.0) for k, v in pileup.items()}
        self.sampling_term = check_number("sampling_term", sampling_term, 0.0, 1.0)
        self.max_spots = _integer("max_spots", max_spots, 1)
        self.windows = {k: self._window_shape(k, v) for k, v in _per_layer("windows", windows, self.layers).items()}
        self.unhealthy_fraction = check_number("unhealthy_fraction", unhealthy_fraction, 0.0, 1.0)
        self.seed_search_cells = _integer("seed_search_cells", seed_search_cells, 0)
        if not isinstance(projective_depth, (bool, np.bool_)):
            raise ConfigError(f"projective_depth must be true or false, but got {projective_depth!r}")
        self.projective_depth = bool(projective_depth)
        self.bfield_tesla = check_number("bfield_tesla", bfield_tesla, 0.0)
        self.solenoid_radius_cm = check_number("solenoid_radius_cm", solenoid_radius_cm, 0.0, self.radius_cm)
        self.mip_mev_per_x0 = check_number("mip_mev_per_x0", mip_mev_per_x0, 0.0)
        self.tile_mip_mev = check_number("tile_mip_mev", tile_mip_mev, 0.0)
        self.lambda_per_x0 = check_number("lambda_per_x0", lambda_per_x0, 0.0, 1.0, low_open=True)
        self.tile_depth_lambda = tiles[0] if isinstance(tile_depth_lambda, int | float) else list(tiles)
        self.tile_lambda_per_x0 = check_number("tile_lambda_per_x0", tile_lambda_per_x0, 0.0, 1.0, low_open=True)
        self.hadron_response = check_number("hadron_response", hadron_response, 0.0, 2.0)
        self.hadron_stochastic_term = check_number("hadron_stochastic_term", hadron_stochastic_term, 0.0, 5.0)
        self.hadron_radius_cm = check_number("hadron_radius_cm", hadron_radius_cm, 0.0, low_open=True)
        self.hadron_spots = _integer("hadron_spots", hadron_spots, 1)
        self.stack = DepthStack(
            self.presampler_x0, tuple(self.layer_depths_x0.values()), self.lambda_per_x0, tiles[0], tuple(tiles[1:])
        )
        self._reach = self._reach_from_seed()

    @staticmethod
    def _tile_depths(value: Any) -> list[float]:
        """TileBar0's depth, or one to three Tile layers' depths, in interaction lengths."""
        if isinstance(value, bool):
            raise ConfigError(f"tile_depth_lambda must be a number or a list of 1 to 3 numbers, but got {value!r}")
        if isinstance(value, int | float | np.floating | np.integer):
            return [check_number("tile_depth_lambda", value, 0.0, low_open=True)]
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not 1 <= len(value) <= 3:
            raise ConfigError(
                f"tile_depth_lambda must be a number or a list of 1 to 3 depths {list(TILE_LAYERS)}, but got {value!r}"
            )
        return [check_number(f"tile_depth_lambda[{i}]", v, 0.0, low_open=True) for i, v in enumerate(value)]

    def impact_phi(self, pt: np.ndarray, phi: np.ndarray, charge: np.ndarray) -> np.ndarray:
        """Azimuth at which particles of (pt GeV, phi, charge) reach the calorimeter (solenoid bending).

        Loopers (sin alpha >= 1) are given the azimuth at which they would have left the solenoid.
        """
        pt, phi, q = (np.asarray(a, np.float64) for a in (pt, phi, charge))
        bend = np.minimum(0.3e-2 * self.bfield_tesla * self.solenoid_radius_cm / (2.0 * np.maximum(pt, 1e-9)), 1.0)
        turn = 2.0 * np.arcsin(bend) - np.arcsin(bend * self.solenoid_radius_cm / self.radius_cm)
        return wrap_phi(phi - q * turn)

    @staticmethod
    def _window_shape(layer: str, value: Any) -> tuple[int, int]:
        name = f"windows[{layer!r}]"
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
            raise ConfigError(f"{name} must be [n_eta, n_phi], but got {value!r}")
        n_eta, n_phi = (_integer(name, v, 1) for v in value)
        if n_phi >= GRIDS[layer].n_phi:
            raise ConfigError(f"{name} n_phi must be < {GRIDS[layer].n_phi} (full azimuth), but got {n_phi}")
        if layer == "EMB2" and (n_eta < 3 or n_phi < 3):
            raise ConfigError(
                f"{name} must be at least [3, 3] (the cluster position uses 3x3 cells), but got {value!r}"
            )
        return n_eta, n_phi

    def _reach_from_seed(self) -> tuple[float, float]:
        """Largest |d eta|, |d phi| from the seed at which a particle can still reach a window."""
        search = (self.seed_search_cells + 1) * GRIDS["EMB2"].d_eta
        lateral = LATERAL_REACH_CM / self.radius_cm
        eta = max((n + 2) * GRIDS[k].d_eta / 2 for k, (n, _) in self.windows.items())
        phi = max((n + 2) * GRIDS[k].d_phi / 2 for k, (_, n) in self.windows.items())
        return eta + search + lateral, phi + search + lateral

    # -- input ------------------------------------------------------------------------------
    @staticmethod
    def _flatten(particles: ak.Array | None, n: int) -> dict[str, np.ndarray]:
        if particles is None and n == 0:
            return {
                f: np.zeros(0, np.int64 if f in ("pid", "event") else np.float64) for f in (*PARTICLE_FIELDS, "event")
            }
        if len(particles) != n:
            raise SimulationInputError(f"particles must have one entry per candidate ({n}), but got {len(particles)}")
        missing = [f for f in PARTICLE_FIELDS if f not in ak.fields(particles)]
        if missing:
            raise SimulationInputError(f"particles lack the fields {missing}; they have {ak.fields(particles)}")
        counts = ak.to_numpy(ak.num(particles, axis=1))
        flat = ak.flatten(particles, axis=1)
        out = {f: ak.to_numpy(flat[f]).astype(np.int64 if f == "pid" else np.float64) for f in PARTICLE_FIELDS}
        out["event"] = np.repeat(np.arange(n), counts)
        return out

    @staticmethod
    def _candidates(seed_eta: Any, seed_phi: Any, mu: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        arrays = [np.asarray(a, dtype=np.float64) for a in (seed_eta, seed_phi, mu)]
        for name, a in zip(("seed_eta", "seed_phi", "mu"), arrays, strict=True):
            if a.ndim != 1 or a.shape != arrays[0].shape:
                raise SimulationInputError(f"{name} must have shape {arrays[0].shape[:1]}, but got {a.shape}")
            if not np.all(np.isfinite(a)):
                raise SimulationInputError(f"{name} must be finite, but got non-finite values")
        if np.any(arrays[2] < 0):
            raise SimulationInputError(f"mu must be >= 0, but got min(mu)={arrays[2].min()}")
        return arrays[0], arrays[1], arrays[2]

    # -- simulation -------------------------------------------------------------------------
    def simulate(
        self,
        particles: ak.Array | None,
        seed_eta: np.ndarray,
        seed_phi: np.ndarray,
        mu: np.ndarray,
        rng: np.random.Generator,
    ) -> dict[str, np.ndarray]:
        """Deposit the particles near each candidate and return cell windows and cluster values.

        Args:
            particles: N lists of records with fields pt, eta, phi, e, m (GeV, rad), pid, charge
                (other fields are ignored); None is accepted for an empty batch.
            seed_eta, seed_phi: (N,) candidate direction.
            mu: (N,) pileup mu per candidate.
            rng: the only source of randomness; equal states give equal outputs.

        Returns:
            ``cells_<layer>`` (N, n_eta, n_phi) float32 MeV for EMB1, EMB2, EMB3 and the Tile layers, with
            fluctuations and noise; the EMB2 window is centred on the hottest measured cell;
            ``cl_eta``, ``cl_phi`` (3x3 EMB2 barycentre around the hottest cell, positive cells
            only), ``cl_e`` (MeV, sum of the EM windows), ``cl_et`` (= cl_e / cosh(cl_eta)),
            all float32 (N,), ``is_unhealthy`` bool (N,), and ``window_eta``, ``window_phi`` (N,)
            float64: the EMB2 window's centre (phi + pi, unwrapped), on which every layer's window
            is centred (``Window.centred_on``).
        """
        seed_eta, seed_phi, mu = self._candidates(seed_eta, seed_phi, mu)
        p = self._flatten(particles, len(seed_eta))
        event, eta, phi, energy, layer = self._deposits(p, seed_eta, seed_phi, rng)
        order = np.argsort(layer, kind="stable")  # radix sort on int8; -1 and 4 (lost) fall outside
        bounds = np.searchsorted(layer[order], np.arange(len(self.layers) + 1))
        by_layer = {
            name: tuple(a[order[bounds[i] : bounds[i + 1]]] for a in (event, eta, phi, energy))
            for i, name in enumerate(self.layers)
        }

        def measure(name: str, deposited: np.ndarray) -> np.ndarray:
            """Sampling fluctuations (EM layers), electronic and pileup noise."""
            if name in EM_LAYERS:
                deposited = sampling_fluctuations(deposited, self.sampling_term, rng)
            sigma = np.sqrt(self.noise_mev[name] ** 2 + self.pileup_noise_mev[name] ** 2 * mu)  # (N,)
            return deposited + sigma[:, None, None] * rng.standard_normal(deposited.shape, dtype=np.float32)

        emb2, cells2 = search_hottest(
            GRIDS["EMB2"],
            self.windows["EMB2"],
            seed_eta,
            seed_phi,
            self.seed_search_cells,
            by_layer["EMB2"],
            lambda region: measure("EMB2", region),
        )
        centre = emb2.centre()
        cells = {"EMB2": cells2}
        for name in self.layers:
            if name != "EMB2":
                window = Window.centred_on(GRIDS[name], self.windows[name], *centre)
                cells[name] = measure(name, window.deposit(*by_layer[name]))
        cells = {name: cells[name] for name in self.layers}
        unhealthy = self._make_unhealthy(cells, rng)
        out = {f"cells_{k}": v.astype(np.float32) for k, v in cells.items()}
        out.update(self._cluster(cells, emb2))
        out["is_unhealthy"] = unhealthy
        # the windows' centre, so that other deposits (overlaid pileup) can be placed in the same cells
        out["window_eta"], out["window_phi"] = centre
        return out

    def _deposits(
        self, p: dict[str, np.ndarray], seed_eta: np.ndarray, seed_phi: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, ...]:
        """All point deposits (event, eta, phi, energy MeV, layer) of the batch, float32 / int32.

        Layer -1 (presampler) and n_layers (beyond the last Tile layer) are lost energy and left for
        the caller to skip.
        """
        apid, q, pt = np.abs(p["pid"]), p["charge"], p["pt"]
        # sin(alpha) = 0.3 B[T] R_sol[m] / (2 pT[GeV]): the turn of the position angle at R_sol
        bend = 0.3e-2 * self.bfield_tesla * self.solenoid_radius_cm / (2.0 * np.maximum(pt, 1e-9))
        reaches = ~np.isin(apid, INVISIBLE_PIDS) & ((q == 0) | (bend < 1.0))
        bend = np.minimum(bend, 1.0)
        turn = 2.0 * np.arcsin(bend) - np.arcsin(bend * self.solenoid_radius_cm / self.radius_cm)
        phi = p["phi"] - q * turn
        ev, eta = p["event"], p["eta"]
        near = (np.abs(eta - seed_eta[ev]) < self._reach[0]) & (np.abs(wrap_phi(phi - seed_phi[ev])) < self._reach[1])
        keep = np.flatnonzero(reaches & near)
        ev, eta, phi, apid, q = ev[keep].astype(np.int32), eta[keep], wrap_phi(phi[keep]), apid[keep], q[keep]
        e, m, pid = p["e"][keep], p["m"][keep], p["pid"][keep]
        path = np.cosh(eta) if self.projective_depth else np.ones_like(eta)

        is_em = np.isin(apid, EM_PIDS)
        is_hadron = (apid != 13) & ~is_em
        em, hadron = np.flatnonzero(is_em), np.flatnonzero(is_hadron)
        start = rng.exponential(1.0, len(hadron))  # first interaction, lambda along the path
        stop = np.full(len(eta), np.inf)  # muons never interact
        stop[hadron] = start / path[hadron]
        mip = np.flatnonzero((q != 0) & ~is_em)
        tiles = (self.stack.tile_depth_lambda, *self.stack.deeper_tile_lambda)
        per_layer = np.array(
            [
                *(self.mip_mev_per_x0 * d for d in self.layer_depths_x0.values()),
                *(self.tile_mip_mev * d / tiles[0] for d in tiles),
            ]
        )
        n_layers = self.stack.n_layers
        mip_e = self.stack.path_before(stop[mip]) * per_layer * path[mip, None]  # (M, n_layers)
        layers = np.tile(np.arange(n_layers, dtype=np.int8), len(mip))
        eta32, phi32 = eta.astype(np.float32), phi.astype(np.float32)
        parts = [
            (
                np.repeat(ev[mip], n_layers),
                np.repeat(eta32[mip], n_layers),
                np.repeat(phi32[mip], n_layers),
                mip_e.astype(np.float32).ravel(),
                layers,
            )
        ]

        # hadronic showers starting before the end of TileBar0: an EM (pi0) part showered like a
        # photon and a hadronic part seen with the response hadron_response
        showering = np.flatnonzero(stop[hadron] < self.stack.edges_lambda[-1])
        shower = hadron[showering]
        avail = np.maximum(np.where(apid >= 1000, e - np.sign(pid) * m, e)[shower], 1e-6)  # kinetic for baryons
        fluct = np.maximum(1.0 + self.hadron_stochastic_term / np.sqrt(avail) * rng.standard_normal(len(avail)), 0.0)
        f_em = hadron_em_fraction(avail, rng)
        spots = sample_hadron_spots(
            avail * (1.0 - f_em) * self.hadron_response * fluct * 1000.0,
            start[showering],
            avail,
            n_spots=self.hadron_spots,
            radius_cm=self.hadron_radius_cm,
            rng=rng,
        )
        owner = shower[spots.owner]
        parts.append(
            self._spots_at(owner, spots, self.stack.layer_of_lambda(spots.depth / path[owner]), ev, eta32, phi32)
        )

        # EM showers: e+-, photons (after converting) and the EM parts of hadronic showers
        em_part = avail * f_em * fluct
        has_em = em_part > 0.0
        em_owner = np.concatenate([em, shower[has_em]])
        conversion = rng.exponential(PHOTON_CONVERSION_X0, len(em)) * (apid[em] != 11)
        spots = sample_em_spots(
            np.concatenate([e[em], em_part[has_em]]),
            np.concatenate([conversion, self._em_start_x0(start[showering][has_em], path[shower[has_em]])]),
            z_eff=self.z_eff,
            critical_energy_mev=self.critical_energy_mev,
            moliere_radius_cm=self.moliere_radius_cm,
            max_spots=self.max_spots,
            rng=rng,
        )
        owner = em_owner[spots.owner]
        parts.append(self._spots_at(owner, spots, self._em_layer(spots.depth / path[owner]), ev, eta32, phi32))

        return tuple(np.concatenate(a) for a in zip(*parts, strict=True))

    def _em_start_x0(self, start_lambda: np.ndarray, path: np.ndarray) -> np.ndarray:
        """Start depth (X0 along the path) of the EM part of hadronic showers starting at ``start_lambda``.

        With several Tile layers a start beyond EMB3 is converted at ``tile_lambda_per_x0`` (see
        :meth:`_em_layer`); with one, at the EM calorimeter's ``lambda_per_x0``, as it always was.
        """
        x0 = start_lambda / self.lambda_per_x0
        if not self.stack.deeper_tile_lambda:
            return x0
        em_end_lambda, em_end_x0 = self.stack.edges_lambda[3], self.stack.edges_x0[-1]
        beyond = start_lambda / path - em_end_lambda  # at eta = 0
        return np.where(beyond > 0.0, (em_end_x0 + beyond / self.tile_lambda_per_x0) * path, x0)

    def _em_layer(self, depth_x0: np.ndarray) -> np.ndarray:
        """Layer of EM spots at depth ``depth_x0`` (X0 at eta = 0): EM layers, then the Tile layers.

        With one Tile layer everything beyond EMB3 is TileBar0's; with several, depth beyond EMB3
        continues at ``tile_lambda_per_x0`` lambda per X0 through the Tile layers (beyond: lost).
        """
        layer = self.stack.layer_of_x0(depth_x0)
        if not self.stack.deeper_tile_lambda:
            return layer
        deep = layer >= 3
        em_end_lambda, em_end_x0 = self.stack.edges_lambda[3], self.stack.edges_x0[-1]
        lam = em_end_lambda + (depth_x0[deep] - em_end_x0) * self.tile_lambda_per_x0
        layer[deep] = self.stack.layer_of_lambda(lam)
        return layer

    def _spots_at(
        self, owner: np.ndarray, spots: Spots, layer: np.ndarray, ev: np.ndarray, eta: np.ndarray, phi: np.ndarray
    ) -> tuple[np.ndarray, ...]:
        """Place spots around their owner's axis: (event, eta, phi, energy, layer)."""
        return (
            ev[owner],
            eta[owner] + spots.dx_cm / self.radius_cm,
            phi[owner] + spots.dy_cm / self.radius_cm,
            spots.energy_mev.astype(np.float32, copy=False),
            layer,
        )

    def _make_unhealthy(self, cells: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """Kill a core cell or shift one EM layer by a cell for ``unhealthy_fraction`` of candidates."""
        n = len(cells["EMB2"])
        bad = np.zeros(n, bool)
        if self.unhealthy_fraction == 0.0 or n == 0:
            return bad
        bad = rng.random(n) < self.unhealthy_fraction
        idx = np.flatnonzero(bad)
        kind, which = rng.integers(0, 2, len(idx)), rng.integers(0, len(EM_LAYERS), len(idx))
        offset = rng.integers(-1, 2, (2, len(idx)))  # dead cell position around the centre
        axis, sign = rng.integers(1, 3, len(idx)), 2 * rng.integers(0, 2, len(idx)) - 1
        for li, name in enumerate(EM_LAYERS):
            c = cells[name]
            dead = (kind == 0) & (which == li)
            rows = np.clip((c.shape[1] - 1) // 2 + offset[0, dead], 0, c.shape[1] - 1)
            cols = np.clip((c.shape[2] - 1) // 2 + offset[1, dead], 0, c.shape[2] - 1)
            c[idx[dead], rows, cols] = 0.0
            for ax in (1, 2):
                for s in (-1, 1):
                    sel = idx[(kind == 1) & (which == li) & (axis == ax) & (sign == s)]
                    c[sel] = np.roll(c[sel], s, axis=ax)
        return bad

    def _cluster(self, cells: dict[str, np.ndarray], emb2: Window) -> dict[str, np.ndarray]:
        """Cluster position (3x3 EMB2 barycentre, positive cells) and energy (EM windows)."""
        c2, grid = cells["EMB2"], emb2.grid
        ce, cp = (emb2.n_eta - 1) // 2, (emb2.n_phi - 1) // 2
        core = np.clip(c2[:, ce - 1 : ce + 2, cp - 1 : cp + 2], 0.0, None)  # (N, 3, 3)
        w = core.sum(axis=(1, 2))
        safe = np.where(w > 0, w, 1.0)
        steps = np.array([-1.0, 0.0, 1.0])
        d_eta = (core.sum(axis=2) @ steps) / safe * grid.d_eta
        d_phi = (core.sum(axis=1) @ steps) / safe * grid.d_phi
        cl_eta = (emb2.eta0 + ce + 0.5) * grid.d_eta + d_eta
        cl_phi = wrap_phi((emb2.phi0 + cp + 0.5) * grid.d_phi - math.pi + d_phi)
        cl_e = sum(cells[k].sum(axis=(1, 2)) for k in EM_LAYERS)
        return {
            "cl_eta": cl_eta.astype(np.float32),
            "cl_phi": cl_phi.astype(np.float32),
            "cl_e": cl_e.astype(np.float32),
            "cl_et": (cl_e / np.cosh(cl_eta)).astype(np.float32),
        }
