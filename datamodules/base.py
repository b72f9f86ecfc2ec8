"""``CachedImageDataModule``: the machinery every image datamodule shares, whatever its images are.

ROOT events become per-event images plus label, weight and aux arrays in a digest-keyed cache,
then fast batches. This base class owns everything that does not depend on *how* an event
becomes an image: the arguments common to all data configs, the identity of the data (files
via :func:`~datamodules.reading.file_identity`, config, :func:`~datamodules.cache.digest_of`),
the two-pass cache build (pass 1: :meth:`~datamodules.reading.TreeReader.scan` checks every
file and returns the scalars; split by event-number hash, class balance and reweighting from
:mod:`datamodules.preprocessing`; pass 2: chunks read one ahead, turned into images by the
subclass and appended to the split's memory-mapped cache files of :mod:`datamodules.cache`),
``setup``/``arrays``/``preprocessing_summary`` and the :class:`~datamodules.loader.BatchLoader`
dataloaders. A subclass (cell images: :class:`~datamodules.calo.CaloDataModule`; jet images:
:class:`~datamodules.jets.JetImageDataModule`) sets ``input_names``/``input_shapes`` and says
what decides its arrays, which branches it reads and how a chunk becomes images.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from calolab.errors import ConfigError, InputFileError, suggest
from datamodules.cache import (
    ArrayFile,
    CacheWriter,
    SplitArrays,
    digest_of,
    is_complete,
    load_split,
    read_meta,
)
from datamodules.loader import BatchLoader
from datamodules.preprocessing import (
    SPLITS,
    TEST,
    TRAIN,
    Reweighting,
    assign_splits,
    check_split,
    event_weights,
)
from datamodules.reading import (
    ReadAhead,
    TreeReader,
    check_selection,
    evaluate_selection,
    expand_files,
    file_identity,
)

log = logging.getLogger(__name__)

DEVICE_RESIDENT = ("auto", "always", "never")
#: "auto" moves the arrays to the accelerator when they take less than this share of its free memory
RESIDENT_FRACTION = 0.5

#: the split code of events that ``train_selection`` keeps out of train and val (in no split)
DROPPED = len(SPLITS)
#: (split code, kind, name) -> the split's array file being filled in pass 2
Outputs = dict[tuple[int, str, str], ArrayFile]

__all__ = ["CachedImageDataModule", "SplitArrays"]


def check_name(value: Any, what: str) -> str:
    """``value`` if it is a non-empty string, else a ConfigError naming ``what``."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what} must be a non-empty name, but got {value!r}")
    return value


def check_count(value: Any, what: str, minimum: int = 1) -> int:
    """``value`` as an int if it is an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}, but got {value!r}")
    return int(value)


class CachedImageDataModule(pl.LightningDataModule):
    """Images and per-event arrays from ROOT ntuples, cached by digest and batched.

    Subclasses call ``super().__init__`` with the common arguments below, then set
    :attr:`input_names` and :attr:`input_shapes` (name -> ``(C, H, W)``) and implement
    :meth:`_data_config`, :meth:`_reader`, :meth:`_chunks`, :meth:`_count` and :meth:`_convert` (optionally
    :attr:`derived_aux`, :meth:`_finish` and :meth:`_summary`).

    Args:
        files: paths or globs of the input files (relative ones are taken from the current
            directory when the datamodule is built).
        tree: the TTree name.
        label: the 0/1 (background/signal) branch.
        weight: optional per-event weight branch, multiplied into the event weights.
        selection: optional uproot expression selecting events.
        train_selection: optional expression (the same grammar) over ``aux`` branches that the
            training and validation events must also pass; the test split keeps every selected
            event, so that a model trained on a clean subset (``~is_unhealthy``) is evaluated on
            the same mixture as one trained on everything.
        aux: per-event values kept for evaluation (``arrays(split).aux``): branches, or the
            names of :attr:`derived_aux` that the subclass computes; the event number is
            always kept, as ``aux["event_number"]``.
        event_number: the integer event-number branch that decides each event's split.
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
            half its free memory), ``always`` or ``never`` (stream batches from the memory maps).
        drop_last: drop the last incomplete training batch.
        num_workers: background threads assembling batches when they are not device-resident.
        seed: the training permutation of epoch ``e`` is seeded by ``seed + e``.
    """

    #: aux names computed in pass 2 by :meth:`_convert` (name -> dtype), not read as branches
    derived_aux: Mapping[str, np.dtype] = MappingProxyType({})

    def __init__(
        self,
        *,
        files: list[str] | str,
        tree: str,
        label: str,
        weight: str | None,
        selection: str | None,
        aux: Sequence[str],
        event_number: str,
        split: Mapping[str, float],
        split_salt: int,
        class_weights: bool,
        reweight: dict | None,
        cache_dir: str,
        batch_size: int,
        eval_batch_size: int,
        device_resident: str,
        drop_last: bool,
        num_workers: int,
        seed: int,
        train_selection: str | None = None,
    ):
        super().__init__()
        if isinstance(files, str | os.PathLike):
            files = [files]
        if not isinstance(files, Sequence) or not files or not all(isinstance(f, str | os.PathLike) for f in files):
            raise ConfigError(f"files must be a path, a glob or a list of them, but got {files!r}")
        self.files = [os.path.abspath(os.path.expanduser(os.fspath(f))) for f in files]
        self.tree = check_name(tree, "tree")
        self.label = check_name(label, "label")
        self.weight = None if weight is None else check_name(weight, "weight")
        self.selection = check_selection(selection)
        self.train_selection = check_selection(train_selection, "train_selection")
        if isinstance(aux, str) or not isinstance(aux, Sequence):
            raise ConfigError(f"aux must be a list of branch names, but got {aux!r}")
        self.event_number = check_name(event_number, "event_number")
        self.aux = [
            check_name(a, "an aux entry") for a in dict.fromkeys(aux) if a not in ("event_number", event_number)
        ]
        self.split = check_split(split)
        self.split_salt = check_count(split_salt, "split_salt", 0)
        if not isinstance(class_weights, bool):
            raise ConfigError(f"class_weights must be true or false, but got {class_weights!r}")
        self.class_weights = class_weights
        self.reweighting = Reweighting.from_config(reweight)
        if cache_dir is None or not os.fspath(cache_dir):
            raise ConfigError(f"cache_dir must be a folder, but got {cache_dir!r}")
        self.cache_dir = Path(os.path.abspath(os.path.expanduser(os.fspath(cache_dir))))
        self.batch_size = check_count(batch_size, "batch_size")
        self.eval_batch_size = check_count(eval_batch_size, "eval_batch_size")
        if device_resident not in DEVICE_RESIDENT:
            raise ConfigError(
                f"device_resident must be one of {list(DEVICE_RESIDENT)}, but got {device_resident!r}{suggest(str(device_resident), DEVICE_RESIDENT)}"
            )
        self.device_resident = device_resident
        self.drop_last = bool(drop_last)
        self.num_workers = check_count(num_workers, "num_workers", 0)
        self.seed = check_count(seed, "seed", 0)

        self.input_names: list[str] = []
        self.input_shapes: dict[str, tuple[int, ...]] = {}
        self._paths: list[str] | None = None
        self._digest: str | None = None
        self._meta: dict[str, Any] | None = None
        self._splits: dict[str, SplitArrays] = {}
        self._tensors: dict[tuple[str, str], list[torch.Tensor]] = {}
        self._resident_on: dict[str, bool] = {}
        self.batch_aux: list[str] = []

    # -- what subclasses define ------------------------------------------------------------------
    def _data_config(self) -> dict[str, Any]:
        """The subclass's settings that decide the cached arrays (JSON-able; part of the digest)."""
        raise NotImplementedError

    def _reader(self) -> TreeReader:
        """The :class:`~datamodules.reading.TreeReader` of pass 1 (and the subclass's pass 2)."""
        raise NotImplementedError

    def _chunks(self, reader: TreeReader, path: str) -> Iterator[Any]:
        """Pass 2: raw chunks of ``path``'s selected events, in :meth:`TreeReader.scan`'s order."""
        raise NotImplementedError

    def _count(self, chunk: Any) -> int:
        """The number of events in a raw chunk."""
        raise NotImplementedError

    def _convert(
        self, chunk: Any, path: str, order: np.ndarray | None
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """A raw chunk -> (input name -> (m, C, H, W) float32 images, derived aux name -> (m,)).

        The rows come in the chunk's event order, or, when ``order`` is given, in that order
        (events grouped by split, so that each split's rows are one slice: reordering before
        the images are built is cheaper than gathering the images afterwards).
        """
        raise NotImplementedError

    def _finish(self, outputs: Outputs, paths: list[str]) -> dict[str, Any]:
        """After pass 2, before the commit: post-process the written arrays; extra meta entries."""
        return {}

    def _summary(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        """The subclass's entries of :meth:`preprocessing_summary`."""
        return {}

    @property
    def branch_aux(self) -> list[str]:
        """The aux entries read as branches (the others are :attr:`derived_aux`)."""
        return [a for a in self.aux if a not in self.derived_aux]

    # -- identity ------------------------------------------------------------------------------
    def _digest_config(self, paths: list[str]) -> dict[str, Any]:
        """Everything that decides the cached arrays (and nothing that only changes batching)."""
        return {
            "files": file_identity(paths),
            "tree": self.tree,
            "label": self.label,
            "weight": self.weight,
            "selection": self.selection,
            "train_selection": self.train_selection,
            "aux": sorted(self.aux),
            "event_number": self.event_number,
            "split": self.split,
            "split_salt": self.split_salt,
            "class_weights": self.class_weights,
            "reweight": self.reweighting.as_config() if self.reweighting else None,
            **self._data_config(),
        }

    def _refresh_digest(self) -> str:
        self._paths = expand_files(self.files)
        digest = digest_of(self._digest_config(self._paths))
        if digest != self._digest:
            self._digest, self._meta, self._splits, self._tensors = digest, None, {}, {}
        return digest

    @property
    def digest(self) -> str:
        """Hex digest of the input files' identity and the data config."""
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

    def _build(self) -> None:
        t0 = time.perf_counter()
        paths, digest = self._paths, self.digest
        log.info(
            "calolab data: building cache %s from %d file(s) of tree %r", self.cache_dir / digest, len(paths), self.tree
        )
        reader = self._reader()
        # pass 2's reader starts now: the first file's images are read while pass 1 scans
        chunks = ReadAhead((i, chunk) for i, path in enumerate(paths) for chunk in self._chunks(reader, path))
        with chunks:
            meta, n_events = self._build_from(reader, paths, digest, chunks, t0)
        log.info(
            "calolab data: cached %d events (%s) in %.1f s",
            n_events,
            self._counts_text(meta),
            time.perf_counter() - t0,
        )

    def _build_from(
        self, reader: TreeReader, paths: list[str], digest: str, chunks: ReadAhead, t0: float
    ) -> tuple[dict, int]:
        """The two passes of :meth:`_build` (``chunks``: pass 2's items, already being read); the
        cache's meta data and the number of events read."""
        scalars, counts = self._scan(reader, paths)
        codes = assign_splits(scalars[self.event_number], self.split, self.split_salt)
        if self.train_selection:
            kept = evaluate_selection(self.train_selection, scalars, "train_selection", self.branch_aux)
            codes[(codes != TEST) & ~kept] = DROPPED  # in no split: not trained or validated on
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
        aux = {**{a: scalars[a] for a in self.branch_aux}, "event_number": scalars[self.event_number]}
        derived = [a for a in self.aux if a in self.derived_aux]
        with CacheWriter(self.cache_dir, digest) as writer:
            outputs: Outputs = {}
            for c, split in enumerate(SPLITS):
                n = len(index[c])
                for name in self.input_names:
                    outputs[c, "input", name] = writer.open_array(split, "input", name, (n, *self.input_shapes[name]))
                for name in derived:
                    outputs[c, "aux", name] = writer.open_array(split, "aux", name, (n,), self.derived_aux[name])
                writer.save(split, "label", "label", label[index[c]])
                writer.save(split, "weight", "weight", weight[index[c]])
                for name, values in aux.items():
                    writer.save(split, "aux", name, values[index[c]])
            # pass 2: images, read one chunk ahead, converted and appended to the cache files
            starts = np.cumsum([0, *counts])
            done = [0] * len(paths)
            for i, chunk in chunks:
                done[i] += self._fill_chunk(chunk, codes[starts[i] + done[i] : starts[i + 1]], outputs, paths[i])
            for path, n_read, count in zip(paths, done, counts):
                if n_read != count:
                    raise InputFileError(
                        f"{path} changed while it was read: {n_read} selected events in the second pass, {count} in the first"
                    )
            extra = self._finish(outputs, paths)
            meta = self._meta_for(digest, paths, label, weight, codes, ratio, time.perf_counter() - t0)
            writer.commit({**meta, **extra})
        return meta, sum(counts)

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

    def _fill_chunk(self, chunk: Any, codes: np.ndarray, outputs: Outputs, path: str) -> int:
        """Convert a raw chunk (:meth:`_convert`) and append it to each split's array files.

        Args:
            chunk: one item of :meth:`_chunks`.
            codes: split codes of the file's events not written yet (the chunk's come first).
            outputs: (split code, kind, name) -> the split's :class:`~datamodules.cache.ArrayFile`.
            path: the file (for messages).

        Returns:
            m, the number of events in the chunk.
        """
        m = self._count(chunk)
        if m > len(codes):
            raise InputFileError(
                f"{path} changed while it was read: more selected events in the second pass than in the first"
            )
        codes = codes[:m]
        order = None if np.all(codes[:-1] <= codes[1:]) else np.argsort(codes, kind="stable")
        inputs, derived = self._convert(chunk, path, order)
        bounds = np.searchsorted(codes if order is None else codes[order], np.arange(len(SPLITS) + 1))
        arrays = {("input", k): v for k, v in inputs.items()} | {("aux", k): v for k, v in derived.items()}
        for c in range(len(SPLITS)):
            if bounds[c + 1] > bounds[c]:
                for (kind, name), values in arrays.items():
                    outputs[c, kind, name].write(values[bounds[c] : bounds[c + 1]])
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
            "train_selection_dropped": int((codes == DROPPED).sum()),
        }

    @staticmethod
    def _counts_text(meta: Mapping[str, Any]) -> str:
        text = ", ".join(f"{s} {meta['counts'][s]['events']}" for s in SPLITS)
        dropped = meta.get("train_selection_dropped", 0)
        return text + (f"; {dropped} kept out of train/val by train_selection" if dropped else "")

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
            "files": list(self._paths),  # where this run reads them (the digest holds their identity)
            "tree": self.tree,
            "input_names": list(self.input_names),
            "input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
            "label": self.label,
            "weight": self.weight,
            "selection": self.selection,
            "train_selection": self.train_selection,
            "train_selection_dropped": meta.get("train_selection_dropped", 0),
            "aux": [*self.aux, "event_number"],
            "aux_dtypes": {k: str(v.dtype) for k, v in self._splits["train"].aux.items()},
            "event_number": self.event_number,
            "split": {"train": round(1.0 - self.split["val"] - self.split["test"], 12), **self.split},
            "split_salt": self.split_salt,
            "class_weights": self.class_weights,
            "reweight": None
            if self.reweighting is None
            else {**self.reweighting.as_config(), "ratio": meta["reweight_ratio"]},
            "counts": meta["counts"],
            **self._summary(meta),
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

    def request_batch_aux(self, names: Sequence[str], what: str = "the task") -> None:
        """Draw these aux variables with every batch, as its fourth element (a dict of float32 tensors).

        A task that trains with per-event values beside the inputs (an adversary's target) asks
        for them in its ``setup``; a name that is not among this data's aux variables is one
        ConfigError naming it and listing them.
        """
        aux = [*self.aux, "event_number"]
        for name in names:
            if name not in aux:
                raise ConfigError(
                    f"{what} needs the aux variable {name!r}, which is not an aux variable of the data"
                    f"{suggest(str(name), aux)}; aux variables: {', '.join(aux)} (add it to data.aux)"
                )
        self.batch_aux = list(dict.fromkeys(names))
        self._tensors.clear()

    def _split_tensors(self, split: str, device: torch.device) -> tuple[list[torch.Tensor], bool]:
        resident = self._resident(device)
        key = (split, str(device) if resident else "mmap")
        if key not in self._tensors:
            a = self.arrays(split)
            aux = [np.asarray(a.aux[n], dtype=np.float32) for n in self.batch_aux]
            arrays = [*(a.inputs[n] for n in self.input_names), *aux, a.label, a.weight]
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
        n_in = len(self.input_names)
        return BatchLoader(
            tensors[:n_in],
            tensors[-2],
            tensors[-1],
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=self.drop_last if train else False,
            seed=self.seed,
            epoch=(lambda: trainer.current_epoch) if trainer is not None else None,
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
            pad=train,  # evaluation: each event once over the ranks (epoch metrics = one process's)
            prefetch=0 if resident else self.num_workers,
            pin_memory=device.type == "cuda" and not resident,
            aux=dict(zip(self.batch_aux, tensors[n_in:-2], strict=True)) or None,
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
