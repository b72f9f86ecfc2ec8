"""The training data as an MLflow dataset input of the run (the UI's Dataset column and filters).

A datamodule's ``preprocessing_summary()`` becomes an MLflow dataset that holds metadata only
(the arrays stay in calolab's cache): its name, the datamodule's digest (content of the input
files plus the data config, see ``datamodules.reading.file_identity``), the input files' folder
as the source, a schema of the arrays a batch is made of (one tensor per input image, the label
and the weight, and the aux branches whose types the summary gives), and a profile with the
event counts per split. Runs trained on the same data show the same dataset in the UI, and
its digest equals the start of the run's ``dataset.digest`` tag.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from mlflow.data.meta_dataset import MetaDataset
from mlflow.types import Schema, TensorSpec

#: MLflow stores a dataset digest in at most 36 characters; the datamodule's is 64 hex digits
DIGEST_LENGTH = 32
#: summary keys the dataset is built from
REQUIRED = ("digest", "input_names", "input_shapes", "counts")
#: the dtype of the cached images, labels and weights (``datamodules.cache.SplitArrays``)
ARRAY_DTYPE = "float32"


class CaloDataset(MetaDataset):
    """A metadata-only MLflow dataset with a profile (MLflow's MetaDataset has none)."""

    def __init__(self, source, name: str, digest: str, schema: Schema | None, profile: Mapping[str, Any]):
        self._profile = dict(profile)
        super().__init__(source=source, name=name, digest=digest, schema=schema)

    @property
    def profile(self) -> dict[str, Any]:
        return self._profile

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "profile": json.dumps(self._profile)}


def calo_dataset(summary: Mapping[str, Any], name: str) -> CaloDataset:
    """The MLflow dataset described by a datamodule's preprocessing summary."""
    from mlflow.data.sources import LocalArtifactDatasetSource

    missing = [k for k in REQUIRED if k not in summary]
    if missing:
        raise ValueError(f"a preprocessing summary needs the keys {list(REQUIRED)}, but {missing} are missing")
    if not isinstance(name, str) or not name:
        raise ValueError(f"the dataset needs a name, but got {name!r}")
    return CaloDataset(
        source=LocalArtifactDatasetSource(_source_uri(summary)),
        name=name,
        digest=str(summary["digest"])[:DIGEST_LENGTH],
        schema=_schema(summary),
        profile=_profile(summary),
    )


def log_dataset_input(summary: Mapping[str, Any], name: str, context: str = "training") -> None:
    """Log the data of ``summary`` as a dataset input of the active MLflow run.

    Args:
        summary: ``CaloDataModule.preprocessing_summary()``.
        name: the dataset's name in the UI (e.g. the data config's name).
        context: how the run used it (MLflow's input tag ``mlflow.data.context``).
    """
    import mlflow

    mlflow.log_input(calo_dataset(summary, name), context=context)


def _source_uri(summary: Mapping[str, Any]) -> str:
    """The input files' common folder (the file itself when there is one), else the cache."""
    files = [f for f in summary.get("files") or [] if isinstance(f, str) and os.path.isabs(f)]
    if files:
        return os.path.commonpath(files)
    return str(summary.get("cache") or "unknown")


def _schema(summary: Mapping[str, Any]) -> Schema:
    """One tensor per input image ``(-1, 1, eta, phi)``, then label, weight and typed aux branches."""
    shapes = summary["input_shapes"]
    specs = [TensorSpec(np.dtype(ARRAY_DTYPE), (-1, *shapes[n]), str(n)) for n in summary["input_names"]]
    specs += [TensorSpec(np.dtype(ARRAY_DTYPE), (-1,), key) for key in ("label", "weight")]
    dtypes = summary.get("aux_dtypes") or {}
    specs += [TensorSpec(np.dtype(dtypes[a]), (-1,), f"aux.{a}") for a in summary.get("aux") or [] if a in dtypes]
    return Schema(specs)


def _profile(summary: Mapping[str, Any]) -> dict[str, Any]:
    counts = summary["counts"]
    events = {split: int(c["events"]) for split, c in counts.items()}
    return {
        "num_events": sum(events.values()),
        "events": events,
        "signal": {split: int(c["signal"]) for split, c in counts.items() if "signal" in c},
        "background": {split: int(c["background"]) for split, c in counts.items() if "background" in c},
        "num_files": len(summary.get("files") or []),
        "tree": summary.get("tree"),
        "selection": summary.get("selection"),
        "label": summary.get("label"),
        "weight": summary.get("weight"),
        "aux": list(summary.get("aux") or []),
        "input_shapes": {n: list(summary["input_shapes"][n]) for n in summary["input_names"]},
        "digest": summary["digest"],
    }
