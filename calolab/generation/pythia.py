"""Pythia 8 wrapper: checked settings, seeded initialisation, vectorised batches of particles.

Pythia's own Python binding (``pythia8mc``) returns whole batches of events as awkward arrays
(``Pythia.nextBatch``), which is what keeps the generator within a small factor of bare
``Pythia.next()``. This module turns such a batch into calolab's particle records (GeV,
radians): ``pt, eta, phi, e, m, pid, charge, status, mother_pid`` for final-state particles,
and validates every setting string up front so that a typo fails with one clear message
instead of Pythia's multi-line abort.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import awkward as ak
import numpy as np

from calolab.errors import GenerationError

#: Pythia accepts seeds in [0, 900_000_000]; 0 means "seed from the clock" and is avoided.
MAX_PYTHIA_SEED = 900_000_000


@contextlib.contextmanager
def _quiet_stdout():
    """Silence Pythia's C++ banner and listings, which write straight to file descriptor 1."""
    try:
        fd = os.dup(1)
    except OSError:  # pragma: no cover - no stdout at all
        yield
        return
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(fd, 1)
            os.close(fd)


def pythia_seed(*entropy: int) -> int:
    """Derive a Pythia seed in [1, 900_000_000] from integers (global seed, chunk, stream)."""
    value = np.random.SeedSequence(list(entropy)).generate_state(1, dtype=np.uint64)[0]
    return int(value % (MAX_PYTHIA_SEED - 1)) + 1


class PythiaGenerator:
    """One initialised Pythia instance producing batches of final-state particles.

    Args:
        settings: Pythia setting strings, e.g. ``"HardQCD:all = on"``.
        seed: random seed, 1..900000000.
        ecm_gev: centre-of-mass energy.
        name: a label used in error messages (the sample / stream name).
    """

    def __init__(self, settings: Sequence[str], seed: int, ecm_gev: float = 13000.0, name: str = "pythia"):
        import pythia8mc

        if not 1 <= int(seed) <= MAX_PYTHIA_SEED:
            raise GenerationError(f"{name}: Pythia seed must be in [1, {MAX_PYTHIA_SEED}], but got {seed}")
        self.name = name
        with _quiet_stdout():
            self._pythia = pythia8mc.Pythia("", False)
        base = [
            f"Beams:eCM = {float(ecm_gev)}",
            "Next:numberCount = 0",
            "Next:numberShowEvent = 0",
            "Next:numberShowInfo = 0",
            "Next:numberShowProcess = 0",
            "Init:showChangedSettings = off",
            "Init:showProcesses = off",
            "Init:showChangedParticleData = off",
            "Random:setSeed = on",
            f"Random:seed = {int(seed)}",
        ]
        for line in base + list(settings):
            with _quiet_stdout():
                ok = self._pythia.readString(str(line))
            if not ok:
                raise GenerationError(
                    f"{name}: invalid Pythia setting {str(line)!r} (expected 'Key:name = value' known to Pythia 8)"
                )
        with _quiet_stdout():
            ok = self._pythia.init()
        if not ok:
            raise GenerationError(f"{name}: Pythia initialisation failed for settings {list(settings)}")
        self._charge_cache: dict[int, float] = {}
        #: Pythia's event weights of the last batch (1 unless a phase-space bias is on)
        self.last_weights = np.zeros(0)

    def _charges(self, pid: np.ndarray) -> np.ndarray:
        """Charges (units of e) for PDG ids, looked up once per distinct id."""
        uniq, inverse = np.unique(pid, return_inverse=True)
        table = np.empty(len(uniq), dtype=np.float32)
        pdata = self._pythia.particleData
        for i, code in enumerate(uniq.tolist()):
            if code not in self._charge_cache:
                self._charge_cache[code] = float(pdata.charge(code))
            table[i] = self._charge_cache[code]
        return table[inverse]

    def next_batch(self, n: int, truth_pid: int | None = None) -> ak.Array | tuple[ak.Array, ak.Array]:
        """Generate ``n`` events; return their final-state particles (N events, var * record).

        With ``truth_pid``, also return per event the last copy of a particle with that
        ``|pid|`` (e.g. 24: the W as it decays) as a record ``pt, eta, phi, m, found``.

        Fields: ``pt, eta, phi, e, m`` (GeV), ``pid`` (int32), ``charge`` (float32),
        ``status`` (int32, Pythia's), ``mother_pid`` (int32, PDG id of the first mother),
        ``mother`` (int32, index of the first mother in the event record: photons sharing it
        come from the same pi0/eta decay).
        """
        with _quiet_stdout():
            batch = self._pythia.nextBatch(int(n), "skip")
        if len(batch) == 0 and n > 0:
            raise GenerationError(f"{self.name}: Pythia produced no events (check the process settings)")
        self.last_weights = ak.to_numpy(batch["info"]["weights"][:, 0]).astype(np.float64)
        prt = batch["prt"]
        counts_all = ak.num(prt, axis=1)
        flat = ak.flatten(prt)
        pid_all = ak.to_numpy(flat["id"]).astype(np.int32)
        status = ak.to_numpy(flat["status"]).astype(np.int32)
        mother1 = ak.to_numpy(flat["mother1"]).astype(np.int64)
        mom = flat["p"]
        px, py, pz, e = (ak.to_numpy(mom[c]).astype(np.float64) for c in ("px", "py", "pz", "e"))
        # mother's pid: mother1 indexes within the same event -> global offset
        offsets = np.repeat(np.cumsum(ak.to_numpy(counts_all)) - ak.to_numpy(counts_all), ak.to_numpy(counts_all))
        mother_pid = pid_all[np.clip(offsets + mother1, 0, len(pid_all) - 1)]
        final = status > 0
        pt = np.hypot(px, py)
        p = np.sqrt(pt**2 + pz**2)
        with np.errstate(divide="ignore", invalid="ignore"):
            eta = np.where(pt > 0, np.arcsinh(pz / np.where(pt > 0, pt, 1.0)), np.sign(pz) * 1e3)
        phi = np.arctan2(py, px)
        m = np.sqrt(np.clip(e**2 - p**2, 0.0, None))
        sel = np.flatnonzero(final)
        counts = ak.to_numpy(ak.sum(ak.unflatten(final, counts_all), axis=1))
        fields = {
            "pt": pt[sel],
            "eta": eta[sel],
            "phi": phi[sel],
            "e": e[sel],
            "m": m[sel],
            "pid": pid_all[sel],
            "charge": self._charges(pid_all[sel]),
            "status": status[sel],
            "mother_pid": mother_pid[sel],
            "mother": mother1[sel].astype(np.int32),
        }
        particles = ak.unflatten(ak.zip(fields), counts)
        if truth_pid is None:
            return particles
        n_ev = len(counts_all)
        event_of = np.repeat(np.arange(n_ev), ak.to_numpy(counts_all))
        hits = np.flatnonzero(np.abs(pid_all) == abs(int(truth_pid)))
        last = np.full(n_ev, -1, dtype=np.int64)
        last[event_of[hits]] = hits  # later entries overwrite earlier: the last copy wins
        found = last >= 0
        idx = np.where(found, last, 0)
        truth = ak.zip(
            {
                "pt": np.where(found, pt[idx], 0.0),
                "eta": np.where(found, eta[idx], 0.0),
                "phi": np.where(found, phi[idx], 0.0),
                "m": np.where(found, m[idx], 0.0),
                "found": found,
            }
        )
        return particles, truth
