"""``CaloDataModule``: calorimeter ntuples -> preprocessed, cached arrays -> fast batches.

The cache, the splits, the weights and the dataloaders are the shared machinery of
:class:`~datamodules.base.CachedImageDataModule`; this module says only how calorimeter cells
become images. Pass 1 checks the cell branches with the scalars; pass 2 reads them in chunks
through :meth:`~datamodules.reading.TreeReader.iter_images` (fixed-size cell arrays, or jagged
cell lists with eta/phi indices), checks them for NaN/inf and normalises each event (per layer,
per cluster or not at all) in place before they are appended to the cache. A batch is
``(inputs, label, weight)``: a tuple of (B, 1, H, W) float32 tensors in ``input_names``
order, then (B,) float32 labels and weights.

Denoising (``targets``: input name -> the branch of its clean image, e.g. ``cells_EMB2_nopu``):
each clean image is cached beside its input as the input ``<name>__target``, scaled by its
input's normalisation factor so both are in the same units; ``input_names`` then ends with the
targets (in the inputs' order) and :attr:`CaloDataModule.targets` maps each input to its target
name. A sample without the clean branches is refused before anything is read, naming the file
and the branch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from calolab.errors import ConfigError, InputFileError
from datamodules.base import CachedImageDataModule
from datamodules.cache import SplitArrays
from datamodules.preprocessing import abs_sums, check_normalisation, scales
from datamodules.reading import InputSpec, TreeReader, parse_inputs

__all__ = ["TARGET_SUFFIX", "CaloDataModule", "SplitArrays"]

#: the cached clean image of input ``name`` (``targets``) is the input ``name + TARGET_SUFFIX``
TARGET_SUFFIX = "__target"


class CaloDataModule(CachedImageDataModule):
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
        train_selection: optional expression over ``aux`` branches that training and
            validation events must also pass (``~is_unhealthy``); the test split keeps every
            selected event.
        targets: optional input name -> branch of its clean (pileup-free) image, of the input's
            shape: cached as the input ``<name>__target`` with the input's normalisation factor
            (denoising auto-encoders, ``conf/data/paed.yaml``).
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
        train_selection: str | None = None,
        targets: Mapping[str, str] | None = None,
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
            train_selection=train_selection,
        )
        self.specs = parse_inputs(inputs)
        self.targets: dict[str, str] = {}
        self.target_branches: dict[str, str] = {}
        if targets is not None:
            if not isinstance(targets, Mapping) or not targets:
                raise ConfigError(f"targets must map input names to clean-image branches, but got {targets!r}")
            by_name = {s.name: s for s in self.specs}
            for name, branch in targets.items():
                if name not in by_name:
                    raise ConfigError(f"targets[{name!r}] names no input; inputs: {list(by_name)}")
                if not isinstance(branch, str) or not branch:
                    raise ConfigError(f"targets[{name!r}] must be a branch name, but got {branch!r}")
                if by_name[name].jagged:
                    raise ConfigError(f"targets[{name!r}]: jagged inputs cannot have targets")
            for spec in list(self.specs):
                if spec.name in targets:
                    target = spec.name + TARGET_SUFFIX
                    self.specs.append(InputSpec(target, str(targets[spec.name]), spec.shape))
                    self.targets[spec.name] = target
                    self.target_branches[spec.name] = str(targets[spec.name])
        self.normalisation = check_normalisation(normalisation)
        self.input_names = [s.name for s in self.specs]
        self.input_shapes = {s.name: (1, *s.shape) for s in self.specs}

    def _data_config(self) -> dict[str, Any]:
        out = {"inputs": {s.name: s.as_config() for s in self.specs}, "normalisation": self.normalisation}
        if self.targets:
            out["targets"] = dict(self.target_branches)
        return out

    def _scan(self, reader: TreeReader, paths: list[str]):
        """Pass 1; with ``targets``, first make sure every file has the clean branches."""
        if self.targets:
            import uproot

            for path in paths:
                try:
                    with uproot.open(path) as f:
                        have = set(f[self.tree].keys()) if self.tree in f else None
                except (OSError, ValueError) as err:
                    raise InputFileError(f"cannot read {path}: {err}") from err
                if have is None:
                    continue  # the scan names the missing tree
                for name, branch in self.target_branches.items():
                    if branch not in have:
                        raise InputFileError(
                            f"{path}:{self.tree} has no branch {branch!r} (the clean target of input {name!r}): "
                            "this sample has no pileup-free twin: generate it with "
                            "sample.pileup_overlay=true sample.pileup_paired=true"
                        )
        return super()._scan(reader, paths)

    def _reader(self) -> TreeReader:
        extra = [*self.branch_aux, *(self.reweighting.variables if self.reweighting else ())]
        return TreeReader(
            self.tree, tuple(self.specs), self.event_number, self.label, self.weight, tuple(extra), self.selection
        )

    def _chunks(self, reader: TreeReader, path: str) -> Iterator[dict[str, np.ndarray]]:
        return reader.iter_images(path)

    def _count(self, chunk: dict[str, np.ndarray]) -> int:
        return len(next(iter(chunk.values())))

    def _convert(
        self, chunk: dict[str, np.ndarray], path: str, order: np.ndarray | None
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Check and normalise a chunk of images: input name -> (m, eta, phi), scaled in place.

        Returns the (m, 1, eta, phi) normalised images (in ``order``), and no derived aux.
        """
        m = self._count(chunk)
        sums = {}
        targets = set(self.targets.values())
        for spec in self.specs:
            s = abs_sums(chunk[spec.name])
            bad = ~np.isfinite(s)
            if bad.any():
                raise InputFileError(
                    f"{int(bad.sum())} of {m} selected events have NaN or inf cells in branch {spec.branch!r} (input {spec.name!r}) of {path}:{self.tree}"
                )
            sums[spec.name] = s
        if self.normalisation != "none":
            factors = scales({k: v for k, v in sums.items() if k not in targets}, self.normalisation)
            factors.update({target: factors[name] for name, target in self.targets.items()})  # the input's units
            for name, f in factors.items():
                np.multiply(chunk[name], f[:, None, None], out=chunk[name])  # in place: the chunk is ours
        images = {spec.name: chunk[spec.name] if order is None else chunk[spec.name][order] for spec in self.specs}
        return {name: image[:, None] for name, image in images.items()}, {}

    def _summary(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        return {
            **({"targets": dict(self.target_branches)} if self.targets else {}),
            "inputs": {s.name: s.as_config() for s in self.specs},
            "normalisation": self.normalisation,
            "normalisation_scale": {
                "layer": "sum of |E| of the layer",
                "cluster": "sum of |E| over all inputs",
                "none": "1",
            }[self.normalisation],
        }
