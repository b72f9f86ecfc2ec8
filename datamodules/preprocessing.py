"""Preprocessing of cell images and event weights: normalisation, split, class balance, reweighting.

Everything here is a pure numpy function of the arrays read from ROOT, so that the cache
(keyed by the config of these steps) can be rebuilt bit for bit. Normalisation divides each
image by a per-event scale (``layer``: the layer's own sum, ``cluster``: the event's total over
all inputs, ``none``); the train/val/test split is a hash of the event number, so an event
always lands in the same split whatever the files' order or the other events; event weights
balance signal against background in every split and, optionally, reweight the background to
the signal's distribution in a few variables (pT, |eta|) with a histogram ratio fitted on the
training split only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from calolab.errors import ConfigError, suggest

NORMALISATIONS = ("layer", "cluster", "none")
SPLITS = ("train", "val", "test")
#: split codes stored per event: index into SPLITS
TRAIN, VAL, TEST = 0, 1, 2

_GOLDEN = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


# -- normalisation ---------------------------------------------------------------------------
def check_normalisation(mode: str) -> str:
    if mode not in NORMALISATIONS:
        raise ConfigError(
            f"normalisation must be one of {list(NORMALISATIONS)}, but got {mode!r}{suggest(str(mode), NORMALISATIONS)}"
        )
    return mode


def abs_sums(image: np.ndarray) -> np.ndarray:
    """Per-event sum of |E| over an (n, eta, phi) image, float32 (n,); NaN/inf propagate.

    The sum of absolute values rather than the plain sum: the two agree for images without
    negative cells, and with electronic noise (negative cells) a layer that holds little
    energy has a plain sum near zero or below, which would blow its image up or flip it.
    """
    return np.abs(image).sum(axis=tuple(range(1, image.ndim)))


def scales(sums: Mapping[str, np.ndarray], mode: str) -> dict[str, np.ndarray]:
    """Per-event factors (float32, (n,)) that multiply each input's image.

    Args:
        sums: input name -> per-event sum of |E| (from :func:`abs_sums`).
        mode: ``layer`` (each image / its own sum), ``cluster`` (every image / the event's
            total over all inputs) or ``none`` (factor 1). An all-zero image stays zero.
    """
    check_normalisation(mode)
    if mode == "none":
        return {k: np.ones(len(v), np.float32) for k, v in sums.items()}
    if mode == "cluster":
        total = sum(sums.values())
        inv = _inverse(total)
        return dict.fromkeys(sums, inv)
    return {k: _inverse(v) for k, v in sums.items()}


def _inverse(s: np.ndarray) -> np.ndarray:
    out = np.zeros(len(s), np.float32)
    np.divide(1.0, s, out=out, where=s > 0, casting="unsafe")
    return out


# -- split -------------------------------------------------------------------------------------
def check_split(split: Mapping[str, float]) -> dict[str, float]:
    """``{"val": f, "test": f}`` (missing keys are 0) with fractions in [0, 1) summing below 1."""
    if not isinstance(split, Mapping):
        raise ConfigError(f"split must map 'val'/'test' to fractions, but got {split!r}")
    out = {"val": 0.0, "test": 0.0}
    for key, value in split.items():
        if key not in out:
            raise ConfigError(
                f"split has unknown key {key!r}{suggest(str(key), out)}; expected 'val' and 'test' (train is the rest)"
            )
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
            raise ConfigError(f"split[{key!r}] must be a fraction in [0, 1), but got {value!r}")
        out[key] = float(value)
    if out["val"] + out["test"] >= 1.0:
        raise ConfigError(
            f"split fractions must leave events for training (val + test < 1), but got val={out['val']}, test={out['test']}"
        )
    return out


def event_hash(event_number: np.ndarray, salt: int = 0) -> np.ndarray:
    """A splitmix64 hash of (event number, salt) mapped to [0, 1), float64 (n,).

    Depends on nothing but the event's own number and the salt, so the split of an event never
    changes when files are added, removed or reordered.
    """
    ev = np.ascontiguousarray(event_number)
    if ev.dtype.kind not in "iu":
        raise ConfigError(f"event numbers must be integers, but got {ev.dtype}")
    z = ev.astype(np.int64, copy=False).view(np.uint64) if ev.dtype.kind == "i" else ev.astype(np.uint64, copy=False)
    offset = np.uint64((int(salt) * _GOLDEN + _GOLDEN) & _MASK64)
    z = z + offset  # uint64 arrays wrap around silently
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def assign_splits(event_number: np.ndarray, split: Mapping[str, float], salt: int = 0) -> np.ndarray:
    """Split code per event (int8: 0 train, 1 val, 2 test) from :func:`event_hash`."""
    fractions = check_split(split)
    u = event_hash(event_number, salt)
    codes = np.full(len(u), TRAIN, np.int8)
    codes[u < fractions["test"] + fractions["val"]] = VAL
    codes[u < fractions["test"]] = TEST
    return codes


# -- weights ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reweighting:
    """Background reweighted to the signal's distribution in a few variables.

    Args:
        variables: per-event branches (e.g. ``ph_pt``, ``ph_eta``).
        bins: bin edges per variable (strictly increasing, at least two). Values outside are
            counted in the first or last bin.
        abs: per variable, whether the absolute value is binned (``|eta|``).
    """

    variables: tuple[str, ...]
    bins: tuple[tuple[float, ...], ...]
    abs: tuple[bool, ...]

    @classmethod
    def from_config(cls, cfg: Mapping | None) -> Reweighting | None:
        """Parse ``{"variables": [...], "bins": [[...], ...], "abs": [...]}`` (or None)."""
        if cfg is None:
            return None
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"reweight must be a mapping with 'variables' and 'bins' (or null), but got {cfg!r}")
        keys = ("variables", "bins", "abs")
        for key in cfg:
            if key not in keys:
                raise ConfigError(f"reweight has unknown key {key!r}{suggest(str(key), keys)}; expected {list(keys)}")
        variables = cfg.get("variables")
        if (
            not isinstance(variables, Sequence)
            or isinstance(variables, str)
            or not variables
            or not all(isinstance(v, str) and v for v in variables)
        ):
            raise ConfigError(f"reweight.variables must be a non-empty list of branch names, but got {variables!r}")
        bins = cfg.get("bins")
        if not isinstance(bins, Sequence) or len(bins) != len(variables):
            raise ConfigError(
                f"reweight.bins must give one list of edges per variable ({len(variables)}), but got {bins!r}"
            )
        edges = []
        for var, b in zip(variables, bins):
            try:
                e = np.asarray(b, dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"reweight.bins for {var!r} must be numbers, but got {b!r}") from err
            if e.ndim != 1 or len(e) < 2 or not np.all(np.diff(e) > 0) or not np.isfinite(e).all():
                raise ConfigError(
                    f"reweight.bins for {var!r} must be at least two strictly increasing finite edges, but got {b!r}"
                )
            edges.append(tuple(float(x) for x in e))
        flags = cfg.get("abs", [False] * len(variables))
        if (
            not isinstance(flags, Sequence)
            or len(flags) != len(variables)
            or not all(isinstance(f, bool) for f in flags)
        ):
            raise ConfigError(f"reweight.abs must give true/false per variable ({len(variables)}), but got {flags!r}")
        return cls(tuple(variables), tuple(edges), tuple(flags))

    def as_config(self) -> dict:
        return {"variables": list(self.variables), "bins": [list(b) for b in self.bins], "abs": list(self.abs)}

    def bin_index(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        """Flat histogram bin of every event (int64 (n,))."""
        idx = []
        for var, edges, use_abs in zip(self.variables, self.bins, self.abs):
            x = np.abs(values[var]) if use_abs else np.asarray(values[var])
            idx.append(np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2))
        return np.ravel_multi_index(tuple(idx), tuple(len(e) - 1 for e in self.bins))

    def fit(self, bins: np.ndarray, label: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """Signal/background ratio of unit-normalised weighted histograms, per flat bin.

        Bins without background keep factor 1 (nothing to reweight there).
        """
        n_bins = int(np.prod([len(e) - 1 for e in self.bins]))
        sig = np.bincount(bins[label == 1], weight[label == 1], minlength=n_bins)
        bkg = np.bincount(bins[label == 0], weight[label == 0], minlength=n_bins)
        if sig.sum() <= 0 or bkg.sum() <= 0:
            raise ConfigError(
                "reweighting needs signal and background events in the training split, but one class is empty"
            )
        sig, bkg = sig / sig.sum(), bkg / bkg.sum()
        ratio = np.ones(n_bins)
        np.divide(sig, bkg, out=ratio, where=bkg > 0)
        return ratio


def event_weights(
    label: np.ndarray,
    codes: np.ndarray,
    *,
    base: np.ndarray | None = None,
    reweighting: Reweighting | None = None,
    values: Mapping[str, np.ndarray] | None = None,
    class_weights: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-event weights (float32 (n,)) and the reweighting ratio table (or None).

    ``base`` (the configured weight branch, else 1) is multiplied by the reweighting factor for
    background events (ratio fitted on the training split, applied to all), then, with
    ``class_weights``, each class is scaled to half the split's event count, so that signal
    and background weights sum to the same total in train, val and test.
    """
    w = np.ones(len(label)) if base is None else np.asarray(base, dtype=np.float64).copy()
    ratio = None
    if reweighting is not None:
        bins = reweighting.bin_index(values)
        train = codes == TRAIN
        ratio = reweighting.fit(bins[train], label[train], w[train])
        bkg = label == 0
        w[bkg] *= ratio[bins[bkg]]
    if class_weights:
        for code in range(len(SPLITS)):
            in_split = codes == code
            half = in_split.sum() / 2.0
            for cls in (0, 1):
                sel = in_split & (label == cls)
                total = w[sel].sum()
                if total > 0:
                    w[sel] *= half / total
    return w.astype(np.float32), ratio
