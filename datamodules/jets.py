"""``JetImageDataModule``: jet constituents in ROOT ntuples -> preprocessed, cached jet images.

The cache, the splits, the weights and the dataloaders are the shared machinery of
:class:`~datamodules.base.CachedImageDataModule`; this module says how a chunk of jets
becomes images. Pass 1 checks the jagged constituent branches (``const_pt``, ``const_eta``,
``const_phi``, ``const_charge`` by default) with the scalars; pass 2 reads the constituents
and the jet axis in chunks, checks them (equal lengths per jet, no NaN/inf) and builds one
``(C, n_eta, n_phi)`` image per jet with :class:`~datamodules.jet_images.JetImager`, one
input named ``image``. On request it also stores per-jet observables computed from the
constituents as aux (:data:`DERIVED_AUX`: girth ``jet_width``, ``n_charged``, ``image_pt``)
beside the aux branches, for the evaluation baselines (tau21 cut, mass window, BDT; q/g
multiplicity and width). Optional per-pixel standardisation (energyflow's ``zero_center`` then
``standardize``) uses the training split's per-pixel means and standard deviations only; they
are stored in the cache's metadata and the preprocessing summary.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import awkward as ak
import numpy as np

from calolab.errors import ConfigError, InputFileError, suggest
from datamodules.base import CachedImageDataModule, Outputs, check_name
from datamodules.cache import SplitArrays
from datamodules.jet_images import CHANNELS, Constituents, JetImager
from datamodules.jet_observables import charged_multiplicity, constituent_width
from datamodules.preprocessing import SPLITS, TRAIN
from datamodules.reading import TreeReader

#: the one network input
INPUT_NAME = "image"
#: bump when the image builder or the derived observables change what a digest's arrays hold
BUILDER_VERSION = 1
#: aux names computed from the constituents during the cache build (name -> dtype)
DERIVED_AUX = MappingProxyType(
    {"jet_width": np.dtype(np.float32), "n_charged": np.dtype(np.int32), "image_pt": np.dtype(np.float32)}
)
DERIVED_DOC = {
    "jet_width": "girth sum(pT dR) / sum(pT) of all constituents, dR from the jet axis",
    "n_charged": "number of constituents with charge != 0",
    "image_pt": "scalar pT sum of the constituents inside the image (the constituents' unit, MeV)",
}
CONSTITUENT_KEYS = ("pt", "eta", "phi", "charge")
AXIS_KEYS = ("eta", "phi")
#: target size of one chunk's images in pass 2 (sets the entries read per chunk)
CHUNK_IMAGE_BYTES = 64 * 2**20
#: images per block when standardising the written arrays
BLOCK = 8192

__all__ = ["DERIVED_AUX", "INPUT_NAME", "JetImageDataModule", "SplitArrays"]


def _branch_map(value: Any, what: str, keys: Sequence[str], optional: Sequence[str] = ()) -> dict[str, str | None]:
    """``{key: branch}`` with every key of ``keys`` (those in ``optional`` may be null)."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{what} must map {list(keys)} to branch names, but got {value!r}")
    for key in value:
        if key not in keys:
            raise ConfigError(f"{what} has unknown key {key!r}{suggest(str(key), keys)}; expected keys {list(keys)}")
    out: dict[str, str | None] = {}
    for key in keys:
        branch = value.get(key)
        if branch is None and key in optional:
            out[key] = None
            continue
        out[key] = check_name(branch, f"{what}.{key}")
    return out


class JetImageDataModule(CachedImageDataModule):
    """Jet images (one input ``image`` of shape (C, n_eta, n_phi)) from jagged constituents.

    Args:
        files: paths or globs of the input files (relative ones are taken from the current
            directory when the datamodule is built).
        tree: the TTree name.
        constituents: ``{"pt", "eta", "phi", "charge"}`` -> jagged branches (one list per jet,
            pT in any unit, MeV in calolab's samples). ``charge`` may be null when no channel
            or aux needs it.
        jet_axis: ``{"eta", "phi"}`` -> per-jet branches of the axis the image is built around.
        shape: ``[n_eta, n_phi]`` pixels.
        half_width: ``[eta, phi]`` half-widths of the image around its centre.
        channels: image channels, in order: ``pt``, ``charged_pt``, ``neutral_pt``, ``count``,
            ``charged_count`` (see :data:`datamodules.jet_images.CHANNELS`).
        centre: ``centroid`` (pT-weighted), ``leading_subjet`` (seeded-cone approximation) or
            null (the jet axis); see :mod:`datamodules.jet_images`.
        rotate: ``principal_axis``, ``subleading_subjet`` or null.
        flip: mirror eta so that the positive-eta half holds the larger pT.
        normalise: divide the pT channels by the jet's pT inside the image.
        standardise: subtract each pixel's training-split mean and divide by its
            training-split standard deviation (pixels that never vary in training are only
            centred), after ``normalise``.
        subjet_radius: cone radius of the approximate subjets.
        label: the 0/1 (background/signal) branch.
        weight: optional per-jet weight branch, multiplied into the event weights.
        selection: optional uproot expression selecting jets, e.g. ``"jet_m > 60000"``.
        aux: per-jet values kept for evaluation: branches (``jet_pt`` is the branch as
            written, MeV in calolab's samples) or names of :data:`DERIVED_AUX` computed from
            the constituents (a derived name wins over a branch of that name); the event
            number is always kept.
        event_number: the integer event-number branch that decides each jet's split.
        split, split_salt, class_weights, reweight, cache_dir, batch_size, eval_batch_size,
        device_resident, drop_last, num_workers, seed: as
            :class:`~datamodules.base.CachedImageDataModule`.
    """

    derived_aux = DERIVED_AUX

    def __init__(
        self,
        *,
        files: list[str] | str,
        tree: str = "jets",
        constituents: Mapping[str, str | None] = MappingProxyType(
            {"pt": "const_pt", "eta": "const_eta", "phi": "const_phi", "charge": "const_charge"}
        ),
        jet_axis: Mapping[str, str] = MappingProxyType({"eta": "jet_eta", "phi": "jet_phi"}),
        shape: Sequence[int] = (25, 25),
        half_width: Sequence[float] = (1.25, 1.25),
        channels: Sequence[str] = ("pt",),
        centre: str | None = "centroid",
        rotate: str | None = None,
        flip: bool = False,
        normalise: bool = False,
        standardise: bool = False,
        subjet_radius: float = 0.3,
        label: str = "truth_label",
        weight: str | None = None,
        selection: str | None = None,
        aux: Sequence[str] = (),
        event_number: str = "event_number",
        split: Mapping[str, float] = MappingProxyType({"val": 0.15, "test": 0.15}),
        split_salt: int = 0,
        class_weights: bool = True,
        reweight: dict | None = None,
        cache_dir: str,
        batch_size: int = 256,
        eval_batch_size: int = 4096,
        device_resident: str = "auto",
        drop_last: bool = False,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__(
            files=files,
            tree=tree,
            label=label,
            weight=weight,
            selection=selection,
            aux=aux,
            event_number=event_number,
            split=split,
            split_salt=split_salt,
            class_weights=class_weights,
            reweight=reweight,
            cache_dir=cache_dir,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            device_resident=device_resident,
            drop_last=drop_last,
            num_workers=num_workers,
            seed=seed,
        )
        self.imager = JetImager(
            shape=shape,
            half_width=half_width,
            channels=channels,
            centre=centre,
            rotate=rotate,
            flip=flip,
            normalise=normalise,
            subjet_radius=subjet_radius,
        )
        if not isinstance(standardise, bool):
            raise ConfigError(f"standardise must be true or false, but got {standardise!r}")
        self.standardise = standardise
        self.constituents = _branch_map(constituents, "constituents", CONSTITUENT_KEYS, optional=("charge",))
        self.jet_axis = _branch_map(jet_axis, "jet_axis", AXIS_KEYS)
        self.needs_charge = self.imager.needs_charge or "n_charged" in self.aux
        if self.needs_charge and self.constituents["charge"] is None:
            wanted = [c for c in self.imager.channels if c != "pt" and c != "count"]
            wanted += ["aux n_charged"] if "n_charged" in self.aux else []
            raise ConfigError(f"{', '.join(wanted)} need the constituents' charge, but constituents.charge is null")
        self.input_names = [INPUT_NAME]
        self.input_shapes = {INPUT_NAME: (len(self.imager.channels), *self.imager.shape)}
        self._range_stats: dict[str, list[int]] = {}

    # -- what the base class asks ----------------------------------------------------------------
    @property
    def _lists(self) -> list[str]:
        keys = ("pt", "eta", "phi", "charge") if self.needs_charge else ("pt", "eta", "phi")
        return [self.constituents[k] for k in keys]

    def _data_config(self) -> dict[str, Any]:
        return {
            "jet_images": BUILDER_VERSION,
            "constituents": dict(self.constituents),
            "jet_axis": dict(self.jet_axis),
            "image": self.imager.as_config(),
            "standardise": self.standardise,
        }

    def _reader(self) -> TreeReader:
        scalars = [
            *self.branch_aux,
            *(self.reweighting.variables if self.reweighting else ()),
            self.jet_axis["eta"],
            self.jet_axis["phi"],
        ]
        c, h, w = self.input_shapes[INPUT_NAME]
        step = int(np.clip(CHUNK_IMAGE_BYTES // (4 * c * h * w), 1000, 200_000))
        return TreeReader(
            self.tree,
            (),
            self.event_number,
            self.label,
            self.weight,
            tuple(dict.fromkeys(scalars)),
            self.selection,
            step_size=step,
            lists=tuple(self._lists),
        )

    def _chunks(self, reader: TreeReader, path: str) -> Iterator[Any]:
        return reader.iter_chunks(path, [*self._lists, self.jet_axis["eta"], self.jet_axis["phi"]], library="ak")

    def _build(self) -> None:
        self._range_stats = {}
        super()._build()

    def _count(self, chunk: Any) -> int:
        return len(chunk[self.jet_axis["eta"]])

    def _convert(
        self, chunk: Any, path: str, order: np.ndarray | None
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Constituents of a chunk of jets -> ``{"image": (m, C, H, W)}`` and the derived aux.

        The builder writes each jet's image straight to its row in ``order``.
        """
        branches = self._lists
        counts = ak.to_numpy(ak.num(chunk[branches[0]], axis=1)).astype(np.int64)
        flat = {}
        for branch in branches:
            arr = chunk[branch]
            if branch != branches[0] and not np.array_equal(ak.to_numpy(ak.num(arr, axis=1)), counts):
                raise InputFileError(
                    f"constituent branch {branch!r} has a different number of entries per jet than {branches[0]!r} in {path}:{self.tree}"
                )
            values = ak.to_numpy(ak.flatten(arr, axis=1))
            if values.dtype.kind == "f":
                bad = ~np.isfinite(values)
                if bad.any():
                    jets = np.unique(np.repeat(np.arange(len(counts)), counts)[bad])
                    raise InputFileError(
                        f"{len(jets)} of {len(counts)} selected jets have NaN or inf in constituent branch {branch!r} of {path}:{self.tree}"
                    )
            flat[branch] = values
        names = self.constituents
        cons = Constituents(
            pt=flat[names["pt"]],
            eta=flat[names["eta"]],
            phi=flat[names["phi"]],
            counts=counts,
            charge=flat[names["charge"]] if self.needs_charge else None,
        )
        jet_eta = ak.to_numpy(chunk[self.jet_axis["eta"]])
        jet_phi = ak.to_numpy(chunk[self.jet_axis["phi"]])
        built = self.imager.build(cons, jet_eta, jet_phi, order)
        stats = self._range_stats.setdefault(path, [0, 0])
        stats[0] += int(np.count_nonzero(cons.pt > 0))
        stats[1] += int(built.n_in_image.sum())
        derived: dict[str, np.ndarray] = {}
        if "jet_width" in self.aux:
            derived["jet_width"] = constituent_width(cons.pt, cons.eta, cons.phi, counts, jet_eta, jet_phi)
        if "n_charged" in self.aux:
            derived["n_charged"] = charged_multiplicity(cons.pt, cons.charge, counts)
        if order is not None:  # the builder wrote the images in this order already
            derived = {k: v[order] for k, v in derived.items()}
        if "image_pt" in self.aux:
            derived["image_pt"] = built.pt_in_image
        return {INPUT_NAME: built.images}, derived

    def _finish(self, outputs: Outputs, paths: list[str]) -> dict[str, Any]:
        """Refuse a range that holds no constituent of a file; standardise the pixels."""
        empty = [p for p in paths if self._range_stats.get(p, [0, 0])[0] > 0 and self._range_stats[p][1] == 0]
        if empty:
            h = self.imager.half_width
            centre = self.imager.centre or "jet axis"
            shown = ", ".join(empty[:5]) + (" ..." if len(empty) > 5 else "")
            raise ConfigError(
                f"the jet-image range |eta| < {h[0]:g}, |phi| < {h[1]:g} around the {centre} (after rotate={self.imager.rotate}) "
                f"holds no constituent of any jet in {shown} (tree {self.tree!r}); expected constituents within the range: "
                f"check half_width and the jet_axis/constituents branches {dict(self.jet_axis)}, {dict(self.constituents)}"
            )
        if not self.standardise:
            return {"standardisation": None}
        files = [outputs[c, "input", INPUT_NAME] for c in range(len(SPLITS))]
        for f in files:
            f.close()
        mean, std = _pixel_moments(np.load(files[TRAIN].path, mmap_mode="r"))
        scale = standardisation_scale(std)
        for f in files:
            if f.shape[0]:
                _standardise_in_place(f.path, mean, scale)
        return {"standardisation": {"mean": mean.astype(np.float32).tolist(), "std": std.astype(np.float32).tolist()}}

    def _summary(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "inputs": {INPUT_NAME: {"channels": list(self.imager.channels), "shape": list(self.imager.shape)}},
            "image": self.imager.as_config(),
            "channels": {c: CHANNELS[c] for c in self.imager.channels},
            "constituents": dict(self.constituents),
            "jet_axis": dict(self.jet_axis),
            "normalisation": {
                "pixels": "pT channels / the jet's pT in the image" if self.imager.normalise else "none",
                "standardise": self.standardise,
            },
            "standardisation": None
            if meta.get("standardisation") is None
            else {
                "from": "train split, per channel and pixel; (x - mean) / std, pixels with std 0 only centred",
                **meta["standardisation"],
            },
            "derived_aux": {a: DERIVED_DOC[a] for a in self.aux if a in DERIVED_AUX},
        }


def _pixel_moments(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean and (population) standard deviation over the first axis, float64.

    Blocks are merged with Chan et al.'s pairwise update, so memory stays one block.
    """
    n_total, mean, m2 = 0, np.zeros(images.shape[1:]), np.zeros(images.shape[1:])
    for start in range(0, len(images), BLOCK):
        block = np.asarray(images[start : start + BLOCK], np.float64)
        n_b = len(block)
        mean_b = block.mean(axis=0)
        m2_b = ((block - mean_b) ** 2).sum(axis=0)
        delta = mean_b - mean
        n_new = n_total + n_b
        mean = mean + delta * (n_b / n_new)
        m2 = m2 + m2_b + delta**2 * (n_total * n_b / n_new)
        n_total = n_new
    return mean, np.sqrt(m2 / max(n_total, 1))


def standardisation_scale(std: np.ndarray) -> np.ndarray:
    """Per-pixel 1 / std of the standardisation; 1 where std is 0 (such pixels are only centred)."""
    return np.divide(1.0, std, out=np.ones_like(std), where=std > 0)


def _standardise_in_place(path, mean: np.ndarray, scale: np.ndarray) -> None:
    """(x - mean) * scale for every image of the ``.npy`` file at ``path``, block by block."""
    try:
        arr = np.load(path, mmap_mode="r+")
    except (OSError, ValueError) as err:
        raise InputFileError(f"cannot reopen cache file {path} to standardise it: {err}") from err
    m, s = mean.astype(np.float32), scale.astype(np.float32)
    for start in range(0, len(arr), BLOCK):
        block = arr[start : start + BLOCK]
        np.subtract(block, m, out=block)
        np.multiply(block, s, out=block)
    arr.flush()
    del arr
