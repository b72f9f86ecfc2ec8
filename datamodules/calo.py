"""``CaloDataModule``: calorimeter ntuples -> preprocessed, cached arrays -> fast batches.

The datamodule ties the pieces together. ``prepare_data`` reads the ROOT files once (two
passes per file through :mod:`datamodules.reading`: first the per-event scalars, with every
check, then the cell images, normalised and written straight into the memory-mapped cache of
:mod:`datamodules.cache`, split by :mod:`datamodules.preprocessing`'s event-number hash).
Later runs with the same files and config find the cache by its digest and never open ROOT.
``setup`` opens the memory maps, and the dataloaders are :class:`~datamodules.loader.BatchLoader`
iterables over whole-split tensors, moved once to the accelerator when they fit. A batch is
``(inputs, label, weight)``: a tuple of (B, 1, H, W) float32 tensors in ``input_names``
order, then (B,) float32 labels and weights.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from calolab.errors import ConfigError, InputFileError, suggest
from datamodules.cache import CacheWriter, SplitArrays, digest_of, is_complete, load_split, read_meta
from datamodules.loader import BatchLoader
from datamodules.preprocessing import (
    SPLITS,
    TRAIN,
    Reweighting,
    abs_sums,
    assign_splits,
    check_normalisation,
    check_split,
    event_weights,
    scales,
)
from datamodules.reading import TreeReader, check_selection, expand_files, file_identity, parse_inputs, read_ahead

log = logging.getLogger(__name__)

DEVICE_RESIDENT = ("auto", "always", "never")
#: "auto" moves the arrays to the accelerator when they take less than this share of its free memory
RESIDENT_FRACTION = 0.5

__all__ = ["CaloDataModule", "SplitArrays"]


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what} must be a non-empty name, but got {value!r}")
    return value


def _positive(value: Any, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}, but got {value!r}")
    return int(value)


class CaloDataModule(pl.LightningDataModule):
    """Calorimeter cell images and per-event weights from ROOT ntuples, cached and batched.

    Args:
        files: paths or globs of the input files (relative ones are taken from the current
            directory when the datamodule is built).
        tree: the TTree name.
        inputs: input name -> ``{"branch": ..., "shape": [n_eta, n_phi]}`` for fixed-size cell
            arrays, or additionally ``"eta_index"``/``"phi_index"`` branches for jagged cell
            lists (energies plus integer indices within the window). Order = the net's inputs.
        label: the 0/1 (background/signal) branch.
        weight: optional per-event weight branch, multiplied into the event weights.
        selection: optional uproot expression selecting events, e.g.
            ``"(ph_pt > 25000) & ~is_unhealthy"``.
        aux: per-event branches kept for evaluation (``arrays(split).aux``); the event number
            is always kept, as ``aux["event_number"]``.
        event_number: the integer event-number branch that decides each event's split.
        normalisation: ``layer`` (each layer image divided by the sum of its cells' |E|),
            ``cluster`` (all layers divided by the event's total over the inputs) or ``none``.
        split: ``{"val": f, "test": f}``; train gets the rest.
        split_salt: changes which events land in which split (same fractions).
        class_weights: scale weights so that signal and background sum to the same total in
            each split.
        reweight: ``{"variables": [...], "bins": [[edges], ...], "abs": [bool, ...]}``: the
            background is reweighted to the signal's distribution in these variables (ratio
            of histograms from the train split, applied to every split).
        cache_dir: the folder holding the caches (one sub-folder per digest).
        batch_size: training batch size.
        eval_batch_size: validation/test/predict batch size.
        device_resident: ``auto`` (move the arrays to the accelerator once when they fit in
            half its free memory), ``always`` (load them into the training device's memory) or
            ``never`` (stream batches from the memory maps).
        drop_last: drop the last incomplete training batch.
        num_workers: background threads assembling batches when they are not device-resident.
        seed: the training permutation of epoch ``e`` is seeded by ``seed + e``.
    """

    def __init__(
        self,
        *,
        files: list[str] | str,
        tree: str,
        inputs: dict[str, dict],
        label: str = "truth_label",
        weight: str | None = None,
        selection: str | None = None,
        aux: Sequence[str] = (),
        event_number: str = "event_number",
        normalisation: str = "layer",
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
        super().__init__()
        if isinstance(files, str | os.PathLike):
            files = [files]
        if not isinstance(files, Sequence) or not files or not all(isinstance(f, str | os.PathLike) for f in files):
            raise ConfigError(f"files must be a path, a glob or a list of them, but got {files!r}")
        self.files = [os.path.abspath(os.path.expanduser(os.fspath(f))) for f in files]
        self.tree = _name(tree, "tree")
        self.specs = parse_inputs(inputs)
        self.label = _name(label, "label")
        self.weight = None if weight is None else _name(weight, "weight")
        self.selection = check_selection(selection)
        if isinstance(aux, str) or not isinstance(aux, Sequence):
            raise ConfigError(f"aux must be a list of branch names, but got {aux!r}")
        self.event_number = _name(event_number, "event_number")
        self.aux = [_name(a, "an aux entry") for a in dict.fromkeys(aux) if a not in ("event_number", event_number)]
        self.normalisation = check_normalisation(normalisation)
        self.split = check_split(split)
        self.split_salt = _positive(split_salt, "split_salt", 0)
        if not isinstance(class_weights, bool):
            raise ConfigError(f"class_weights must be true or false, but got {class_weights!r}")
        self.class_weights = class_weights
        self.reweighting = Reweighting.from_config(reweight)
        if cache_dir is None or not os.fspath(cache_dir):
            raise ConfigError(f"cache_dir must be a folder, but got {cache_dir!r}")
        self.cache_dir = Path(os.path.abspath(os.path.expanduser(os.fspath(cache_dir))))
        self.batch_size = _positive(batch_size, "batch_size")
        self.eval_batch_size = _positive(eval_batch_size, "eval_batch_size")
        if device_resident not in DEVICE_RESIDENT:
            raise ConfigError(
                f"device_resident must be one of {list(DEVICE_RESIDENT)}, but got {device_resident!r}{suggest(str(device_resident), DEVICE_RESIDENT)}"
            )
        self.device_resident = device_resident
        self.drop_last = bool(drop_last)
        self.num_workers = _positive(num_workers, "num_workers", 0)
        self.seed = _positive(seed, "seed", 0)

        self.input_names: list[str] = [s.name for s in self.specs]
        self.input_shapes: dict[str, tuple[int, ...]] = {s.name: (1, *s.shape) for s in self.specs}
        self._paths: list[str] | None = None
        self._digest: str | None = None
        self._meta: dict[str, Any] | None = None
        self._splits: dict[str, SplitArrays] = {}
        self._tensors: dict[tuple[str, str], list[torch.Tensor]] = {}
        self._resident_on: dict[str, bool] = {}

    # -- identity ------------------------------------------------------------------------------
    def _digest_config(self, paths: list[str]) -> dict[str, Any]:
        """Everything that decides the cached arrays (and nothing that only changes batching)."""
        return {
            "files": file_identity(paths),
            "tree": self.tree,
            "inputs": {s.name: s.as_config() for s in self.specs},
            "label": self.label,
            "weight": self.weight,
            "selection": self.selection,
            "aux": sorted(self.aux),
            "event_number": self.event_number,
            "normalisation": self.normalisation,
            "split": self.split,
            "split_salt": self.split_salt,
            "class_weights": self.class_weights,
            "reweight": self.reweighting.as_config() if self.reweighting else None,
        }

    def _refresh_digest(self) -> str:
        self._paths = expand_files(self.files)
        digest = digest_of(self._digest_config(self._paths))
        if digest != self._digest:
            self._digest, self._meta, self._splits, self._tensors = digest, None, {}, {}
        return digest

    @property
    def digest(self) -> str:
        """Hex digest of the input files' identity (path, size, mtime) and the data config."""
        return self._digest if self._digest is not None else self._refresh_digest()

    @property
    def cache_path(self) -> Path:
        """The folder of this config's cache."""
        return self.cache_dir / self.digest

    # -- building the cache ----------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Build the cache from ROOT unless a complete one with this digest exists."""
        path = self.cache_dir / self._refresh_digest()
        if is_complete(path):
            log.info("calolab data: using cache %s", path)
            return
        self._build()

    def _reader(self) -> TreeReader:
        extra = [*self.aux, *(self.reweighting.variables if self.reweighting else ())]
        return TreeReader(
            self.tree, tuple(self.specs), self.event_number, self.label, self.weight, tuple(extra), self.selection
        )

    def _build(self) -> None:
        t0 = time.perf_counter()
        paths, digest = self._paths, self.digest
        log.info(
            "calolab data: building cache %s from %d file(s) of tree %r", self.cache_dir / digest, len(paths), self.tree
        )
        reader = self._reader()
        scalars, counts = self._scan(reader, paths)
        codes = assign_splits(scalars[self.event_number], self.split, self.split_salt)
        label = scalars[self.label].astype(np.float32)
        weight, ratio = event_weights(
            label,
            codes,
            base=scalars[self.weight] if self.weight else None,
            reweighting=self.reweighting,
            values=scalars,
            class_weights=self.class_weights,
        )
        index = [np.flatnonzero(codes == c) for c in range(len(SPLITS))]
        if len(index[TRAIN]) == 0:
            raise ConfigError(
                f"the training split is empty ({sum(counts)} events, split={self.split}); use more events or smaller val/test fractions"
            )
        aux = {**{a: scalars[a] for a in self.aux}, "event_number": scalars[self.event_number]}
        with CacheWriter(self.cache_dir, digest) as writer:
            images = {}
            for c, split in enumerate(SPLITS):
                for spec in self.specs:
                    images[c, spec.name] = writer.open_array(split, "input", spec.name, (len(index[c]), 1, *spec.shape))
                writer.save(split, "label", "label", label[index[c]])
                writer.save(split, "weight", "weight", weight[index[c]])
                for name, values in aux.items():
                    writer.save(split, "aux", name, values[index[c]])
            # pass 2: images, read one chunk ahead, normalised and appended to the cache files
            starts = np.cumsum([0, *counts])
            chunks = read_ahead((i, chunk) for i, path in enumerate(paths) for chunk in reader.iter_images(path))
            done = [0] * len(paths)
            for i, chunk in chunks:
                done[i] += self._fill_chunk(chunk, codes[starts[i] + done[i] : starts[i + 1]], images, paths[i])
            for path, n_read, count in zip(paths, done, counts):
                if n_read != count:
                    raise InputFileError(
                        f"{path} changed while it was read: {n_read} selected events in the second pass, {count} in the first"
                    )
            meta = self._meta_for(digest, paths, label, weight, codes, ratio, time.perf_counter() - t0)
            writer.commit(meta)
        log.info(
            "calolab data: cached %d events (%s) in %.1f s",
            sum(counts),
            self._counts_text(meta),
            time.perf_counter() - t0,
        )

    def _scan(self, reader: TreeReader, paths: list[str]) -> tuple[dict[str, np.ndarray], list[int]]:
        """Pass 1: check every file; the selected events' scalars (all files) and counts per file."""
        per_file = [reader.scan(p) for p in paths]
        counts = [len(s[self.event_number]) for s in per_file]
        if sum(counts) == 0:
            shown = ", ".join(paths[:5]) + (" ..." if len(paths) > 5 else "")
            if self.selection:
                raise ConfigError(f"selection {self.selection!r} selects no event in {len(paths)} file(s): {shown}")
            raise InputFileError(f"tree {self.tree!r} holds no events in {len(paths)} file(s): {shown}")
        return {b: np.concatenate([s[b] for s in per_file]) for b in reader.scalar_branches}, counts

    def _fill_chunk(self, chunk: dict[str, np.ndarray], codes: np.ndarray, images: dict, path: str) -> int:
        """Check and normalise a chunk of images and append them to each split's array file.

        Args:
            chunk: input name -> (m, eta, phi) float32 images, normalised here in place.
            codes: split codes of the file's events not written yet (the chunk's come first).
            images: (split code, input name) -> the split's :class:`~datamodules.cache.ArrayFile`.
            path: the file (for messages).

        Returns:
            m, the number of events in the chunk.
        """
        m = len(next(iter(chunk.values())))
        if m > len(codes):
            raise InputFileError(
                f"{path} changed while it was read: more selected events in the second pass than in the first"
            )
        sums = {}
        for spec in self.specs:
            s = abs_sums(chunk[spec.name])
            bad = ~np.isfinite(s)
            if bad.any():
                raise InputFileError(
                    f"{int(bad.sum())} of {m} selected events have NaN or inf cells in branch {spec.branch!r} (input {spec.name!r}) of {path}:{self.tree}"
                )
            sums[spec.name] = s
        if self.normalisation != "none":
            for name, f in scales(sums, self.normalisation).items():
                np.multiply(chunk[name], f[:, None, None], out=chunk[name])  # in place: the chunk is ours
        codes = codes[:m]
        per_split = np.bincount(codes, minlength=len(SPLITS))
        for c in np.flatnonzero(per_split):
            sel = None if per_split[c] == m else np.flatnonzero(codes == c)
            for spec in self.specs:
                images[c, spec.name].write(chunk[spec.name] if sel is None else chunk[spec.name][sel])
        return m

    def _meta_for(self, digest, paths, label, weight, codes, ratio, seconds) -> dict[str, Any]:
        counts = {}
        for c, split in enumerate(SPLITS):
            sel = codes == c
            sig, bkg = sel & (label == 1), sel & (label == 0)
            counts[split] = {
                "events": int(sel.sum()),
                "signal": int(sig.sum()),
                "background": int(bkg.sum()),
                "signal_weight": float(weight[sig].sum(dtype=np.float64)),
                "background_weight": float(weight[bkg].sum(dtype=np.float64)),
            }
        return {
            "digest": digest,
            "config": self._digest_config(paths),
            "input_names": self.input_names,
            "input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
            "aux_names": [*self.aux, "event_number"],
            "counts": counts,
            "reweight_ratio": None
            if ratio is None
            else ratio.reshape([len(b) - 1 for b in self.reweighting.bins]).tolist(),
            "build_seconds": round(seconds, 3),
        }

    @staticmethod
    def _counts_text(meta: Mapping[str, Any]) -> str:
        return ", ".join(f"{s} {meta['counts'][s]['events']}" for s in SPLITS)

    # -- opening it ------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Open the cache's memory maps (building the cache first if it is missing)."""
        digest = self.digest
        if self._meta is not None and self._meta.get("digest") == digest:
            return
        path = self.cache_dir / digest
        if not is_complete(path):
            self.prepare_data()
        meta = read_meta(path)
        missing = [n for n in self.input_names if f"input:{n}" not in meta["files"]["train"]]
        if meta.get("digest") != digest or missing:
            raise InputFileError(f"the cache {path} does not match this config; delete it to rebuild")
        self._splits = {}
        for split in SPLITS:
            arrays = load_split(path, meta, split)
            arrays.inputs = {n: arrays.inputs[n] for n in self.input_names}
            arrays.aux = {n: arrays.aux[n] for n in [*self.aux, "event_number"]}
            self._splits[split] = arrays
        self._meta = meta
        log.info("calolab data: opened cache %s (%s)", path, self._counts_text(meta))

    def arrays(self, split: str) -> SplitArrays:
        """One split's cached arrays (memory maps): ``"train"``, ``"val"`` or ``"test"``."""
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {list(SPLITS)}, but got {split!r}{suggest(str(split), SPLITS)}")
        self.setup()
        return self._splits[split]

    def preprocessing_summary(self) -> dict[str, Any]:
        """JSON-able description of the data: config, digest, split fractions and counts."""
        self.setup()
        meta = self._meta
        return {
            "digest": self.digest,
            "cache": str(self.cache_dir / self.digest),
            "files": [f[0] for f in meta["config"]["files"]],
            "tree": self.tree,
            "inputs": {s.name: s.as_config() for s in self.specs},
            "input_names": list(self.input_names),
            "input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
            "label": self.label,
            "weight": self.weight,
            "selection": self.selection,
            "aux": [*self.aux, "event_number"],
            "event_number": self.event_number,
            "normalisation": self.normalisation,
            "normalisation_scale": {
                "layer": "sum of |E| of the layer",
                "cluster": "sum of |E| over all inputs",
                "none": "1",
            }[self.normalisation],
            "split": {"train": round(1.0 - self.split["val"] - self.split["test"], 12), **self.split},
            "split_salt": self.split_salt,
            "class_weights": self.class_weights,
            "reweight": None
            if self.reweighting is None
            else {**self.reweighting.as_config(), "ratio": meta["reweight_ratio"]},
            "counts": meta["counts"],
        }

    # -- batches ---------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _nbytes(self) -> int:
        return sum(
            int(np.prod(a.shape)) * 4 for s in self._splits.values() for a in (*s.inputs.values(), s.label, s.weight)
        )

    def _resident(self, device: torch.device) -> bool:
        """Whether to hold the arrays in ``device``'s memory (decided once per device)."""
        key = str(device)
        if key not in self._resident_on:
            if self.device_resident != "auto":
                decision = self.device_resident == "always"
            elif device.type == "cuda":
                free, _ = torch.cuda.mem_get_info(device)
                decision = self._nbytes() < RESIDENT_FRACTION * free
                log.info(
                    "calolab data: %.0f MB of arrays %s %s (%.0f MB free)",
                    self._nbytes() / 1e6,
                    "moved once to" if decision else "streamed to",
                    device,
                    free / 1e6,
                )
            else:  # CPU: the memory maps already are in memory; other accelerators: no free-memory query
                decision = False
            self._resident_on[key] = decision
        return self._resident_on[key]

    def _split_tensors(self, split: str, device: torch.device) -> tuple[list[torch.Tensor], bool]:
        resident = self._resident(device)
        key = (split, str(device) if resident else "mmap")
        if key not in self._tensors:
            a = self.arrays(split)
            arrays = [*(a.inputs[n] for n in self.input_names), a.label, a.weight]
            if resident:
                tensors = [torch.from_numpy(np.array(x)).to(device) for x in arrays]
            else:
                tensors = [torch.from_numpy(x) for x in arrays]  # copy-on-write memory maps: no copy
            self._tensors[key] = tensors
        return self._tensors[key], resident

    def _loader(self, split: str, train: bool) -> BatchLoader:
        self.setup()
        device = self._device()
        tensors, resident = self._split_tensors(split, device)
        trainer = self.trainer
        return BatchLoader(
            tensors[:-2],
            tensors[-2],
            tensors[-1],
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=self.drop_last if train else False,
            seed=self.seed,
            epoch=(lambda: trainer.current_epoch) if trainer is not None else None,
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
            prefetch=0 if resident else self.num_workers,
            pin_memory=device.type == "cuda" and not resident,
        )

    def train_dataloader(self) -> BatchLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> BatchLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> BatchLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> BatchLoader:
        """The test split, in order."""
        return self._loader("test", train=False)

    def teardown(self, stage: str | None = None) -> None:
        """Release the batch tensors (device memory); the memory maps stay open."""
        self._tensors.clear()
