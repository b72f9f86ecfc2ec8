"""A finished training evaluated on other data: ``calolab evaluate run_id=<id> data.files=[...]``.

The run's own data config is pointed at other files (a folder, a file or globs): every event they
select is the test set (no train/val/test split of them), the images are built by the run's own
preprocessing, and whatever the preprocessing fitted on the run's training split (the per-pixel
standardisation of jet images) is the run's, never refitted on the other files. The evaluator
reads its training split from the run's data, so that the baselines (cuts, BDT) are fitted where
the net was trained and compared with it on the same other events.

Files written by ``calolab sample`` (generated jet images) carry a record of their image frame
(:mod:`calolab.generation.sampled_images`): a frame that differs from the tagger's is one clear
error; the images are taken as generated (the tagger's own centring is not applied twice); aux
variables that such a file holds only as placeholders (``jet_eta = 0``, ``mu = 0``) are left
out, and the baselines, efficiency plots and decorrelation that need them are skipped with a
log line. Aux branches another file lacks are treated the same way.

The result is a new MLflow run in the run's experiment, never the training run itself: the run's
own test metrics on its own test split stay as they are, and the new run holds the same metric
keys (``test/auc``, ...), so the MLflow UI lines the two up. It is tagged ``calolab.kind=evaluation``
(never a promotion candidate), with the source run (``calolab.source_run_id``, and
``mlflow.parentRunId`` so that the UI shows it under the training), and the evaluated files are its
MLflow dataset input (context ``evaluation``). Bad input fails before that run is created.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

import calolab
from calolab import keys
from calolab.errors import ConfigError, InputFileError
from calolab.generation import sampled_images

log = logging.getLogger(__name__)

#: ``calolab.kind`` of these runs (never taken for a training by the registry)
EVALUATION_KIND = "evaluation"
#: the training run evaluated, and the files it was evaluated on
SOURCE_RUN_TAG = "calolab.source_run_id"
EVALUATED_FILES_TAG = "calolab.evaluated_files"
PARENT_RUN_TAG = "mlflow.parentRunId"


@dataclass
class OtherData:
    """What an evaluator reads of a datamodule, with other data as the test split.

    Attributes:
        test: every selected event of the other files (:class:`~datamodules.cache.SplitArrays`).
        source: the run's own datamodule; its training split is the evaluator's ``train``.
        input_names: the network inputs.
        summary: the other data's preprocessing summary (the MLflow dataset input).
        skipped: aux variables left out -> why.
    """

    test: Any
    source: Any
    input_names: list[str]
    summary: dict[str, Any]
    skipped: dict[str, str] = field(default_factory=dict)

    def arrays(self, split: str):
        if split == "test":
            return self.test
        if split == "train":
            return self.source.arrays("train")
        raise ConfigError(f"evaluating on other data has only the test split (and the run's train), not {split!r}")


def expand(files: str | Sequence[str]) -> list[str]:
    """Files, globs and folders (their ``*.root`` files) as patterns a datamodule takes."""
    files = [files] if isinstance(files, str | os.PathLike) else list(files)
    if not files:
        raise ConfigError("data.files must name at least one file, folder or glob, but got []")
    out = []
    for f in files:
        path = os.path.abspath(os.path.expanduser(os.fspath(f)))
        out.append(os.path.join(path, "*.root") if os.path.isdir(path) else path)
    return out


def _branches(path: str, tree: str) -> set[str] | None:
    """The branch names of ``tree`` in ``path`` (None: no such tree; the datamodule says so)."""
    import uproot

    try:
        with uproot.open(path) as f:
            obj = f.get(tree)
            return None if obj is None or not hasattr(obj, "keys") else set(obj.keys())
    except (OSError, ValueError) as err:
        raise InputFileError(f"cannot read {path}: {err}") from err


@dataclass
class Plan:
    """The other files checked against the run's data config, before anything is built.

    Attributes:
        paths: the files.
        overrides: data-config keys that differ from the run's.
        standardise: whether the run's per-pixel standardisation is to be applied.
        skipped: aux variables left out -> why.
    """

    paths: list[str]
    overrides: dict[str, Any]
    standardise: bool
    skipped: dict[str, str]


def plan_other_data(cfg: DictConfig, files: str | Sequence[str], tree: str | None = None) -> Plan:
    """Check ``files`` against the run's data config (``cfg.data``); what to change to read them.

    Args:
        cfg: the run's resolved config.
        files: other files, folders or globs.
        tree: their tree, when it is not the run's.
    """
    from datamodules.reading import expand_files

    data = OmegaConf.to_container(cfg.data, resolve=True)
    paths = expand_files(expand(files))
    tree = str(tree or data.get("tree"))
    records = {p: sampled_images.read_record(p) for p in paths}
    sampled = [p for p, r in records.items() if r is not None]
    if sampled and len(sampled) != len(paths):
        plain = [p for p in paths if records[p] is None]
        raise ConfigError(
            f"data.files mixes generated ({sampled[0]}) and other files ({plain[0]}): expected one kind, evaluate them apart"
        )
    overrides: dict[str, Any] = {
        "files": paths,
        "tree": tree,
        "split": {"val": 0.0, "test": 0.0},  # every event in one split: the test set
    }
    if "train_selection" in data:
        overrides["train_selection"] = None  # a test set keeps every selected event
    if data.get("reweight") is not None:
        log.info("calolab evaluate: the run's reweighting (fitted on its training split) is not applied to %s", paths)
        overrides["reweight"] = None
    standardise = bool(data.get("standardise"))
    if standardise:
        overrides["standardise"] = False  # the run's own standardisation is applied after the build
    skipped: dict[str, str] = {}
    for path in sampled:
        sampled_images.check_frame(data, records[path], path)
        overrides.update(sampled_images.frame_overrides(data))
        skipped.update(sampled_images.unusable_aux(data, records[path]))
    derived = set(_derived_aux(data))
    for path in paths:
        names = _branches(path, tree)
        if names is None:
            continue
        for a in data.get("aux") or []:
            if a not in derived and a not in names and a not in skipped:
                skipped[a] = f"no branch {a!r} in {path}:{tree}"
    if skipped:
        overrides["aux"] = [a for a in data.get("aux") or [] if a not in skipped]
        for name, why in skipped.items():
            log.info("calolab evaluate: aux %s left out: %s", name, why)
    return Plan(paths=paths, overrides=overrides, standardise=standardise, skipped=skipped)


def _derived_aux(data: Mapping[str, Any]) -> list[str]:
    """The aux names the data config's datamodule class computes itself (not branches)."""
    from hydra.utils import get_class

    try:
        return list(getattr(get_class(str(data.get("_target_"))), "derived_aux", {}))
    except Exception:  # the datamodule's build says what is wrong with its target
        return []


def build_other_data(cfg: DictConfig, source, plan: Plan) -> OtherData:
    """The run's data config on the planned files: all their events as the test set.

    Args:
        cfg: the run's resolved config.
        source: the run's own datamodule (its training split and fitted preprocessing).
        plan: :func:`plan_other_data`'s.
    """
    from hydra.utils import instantiate

    data = OmegaConf.to_container(cfg.data, resolve=True)
    dm = instantiate({**data, **plan.overrides}, _convert_="all")
    dm.prepare_data()
    dm.setup("fit")
    if dict(dm.input_shapes) != dict(source.input_shapes):
        raise ConfigError(
            f"{', '.join(plan.paths)}: inputs {dict(dm.input_shapes)} do not match the run's {dict(source.input_shapes)}"
        )
    test = dm.arrays("train")  # all events (split val = test = 0)
    if plan.standardise:
        stats = source.preprocessing_summary().get("standardisation")
        test.inputs = _standardised(test.inputs, stats, plan.paths)
    summary = {**dm.preprocessing_summary(), "evaluated_as": "test: every selected event"}
    return OtherData(
        test=test, source=source, input_names=list(source.input_names), summary=summary, skipped=plan.skipped
    )


def _standardised(inputs: Mapping[str, np.ndarray], stats: Mapping | None, paths) -> dict[str, np.ndarray]:
    """The run's per-pixel standardisation (its training split's mean and std) applied to ``inputs``.

    The same arithmetic as :func:`datamodules.jets._standardise_in_place`: pixels with std 0 only centred.
    """
    from datamodules.jets import standardisation_scale

    if not stats:
        raise ConfigError(f"the run's data standardises its images but its cache holds no standardisation for {paths}")
    mean, std = np.asarray(stats["mean"], np.float32), np.asarray(stats["std"], np.float32)
    scale = standardisation_scale(std)
    out = {}
    for name, images in inputs.items():
        if images.shape[1:] != mean.shape:
            raise ConfigError(
                f"{paths[0]}: input {name!r} has images of shape {images.shape[1:]}, "
                f"but the run's standardisation is for {mean.shape}"
            )
        out[name] = (np.asarray(images, np.float32) - mean) * scale  # (N, C, H, W)
    return out


def prune_evaluation(evaluation, aux: Sequence[str]) -> list[str]:
    """Drop the parts of a classifier evaluation that need aux variables the data lack; why, per part."""
    have, dropped = set(aux), []
    baselines = list(getattr(evaluation, "baselines", ()) or ())
    kept = [b for b in baselines if set(b.variables) <= have]
    for b in baselines:
        if b not in kept:
            dropped.append(f"baseline {b.name}: needs {sorted(set(b.variables) - have)}")
    if baselines:
        evaluation.baselines = kept
        if getattr(evaluation, "working_point", None) not in (None, *[b.name for b in kept]):
            dropped.append(f"working point {evaluation.working_point}: its baseline is skipped")
            evaluation.working_point = None
    for attr in ("decorrelation", "subsets"):
        specs = list(getattr(evaluation, attr, ()) or ())
        keep = [s for s in specs if set(getattr(s, "variables", None) or [s.variable]) <= have]
        for s in specs:
            if s not in keep:
                dropped.append(
                    f"{attr} {s.name}: needs {sorted(set(getattr(s, 'variables', None) or [s.variable]) - have)}"
                )
        if specs:
            setattr(evaluation, attr, keep)
    return dropped


def evaluate_other_data(
    store, run_id: str, files: str | Sequence[str], tree: str | None = None
) -> tuple[str, dict[str, float], dict[str, float]]:
    """Evaluate run ``run_id`` on ``files`` into a new run; returns its id, its metrics and the run's own."""
    import mlflow

    from calolab.app import ROOT_DIR
    from calolab.pipeline.evaluate import build_evaluation, log_evaluation
    from calolab.pipeline.restore import restore_run, run_config
    from calolab.registry.selection import KIND_TAG
    from calolab.tracking import TrackedRun, log_dataset_input
    from calolab.tracking.git import git_state
    from calolab.tracking.naming import run_name

    cfg = run_config(run_id, store)
    plan = plan_other_data(cfg, files, tree)  # bad input fails before the restore
    restored = restore_run(run_id, store, cfg=cfg)
    other = build_other_data(restored.cfg, restored.dm, plan)
    evaluation = build_evaluation(restored.cfg)
    for line in prune_evaluation(evaluation, list(other.test.aux)):
        log.info("calolab evaluate: skipped %s (not in %s)", line, ", ".join(other.summary["files"]))
    source = store.client().get_run(run_id)
    first = Path(other.summary["files"][0]).stem
    tags = {
        KIND_TAG: EVALUATION_KIND,
        SOURCE_RUN_TAG: run_id,
        PARENT_RUN_TAG: run_id,
        EVALUATED_FILES_TAG: ", ".join(other.summary["files"])[:5000],
        keys.DATASET_DIGEST_TAG: other.summary["digest"],
        keys.VERSION_TAG: calolab.__version__,
        keys.EXPERIMENT_TAG: restored.experiment,
        keys.MLFLOW_SOURCE_TAG: "calolab evaluate",
        **{k: v for k, v in source.data.tags.items() if k == keys.TASK_KIND_TAG},
        **git_state(ROOT_DIR),
    }
    name = run_name(restored.experiment, overrides=[f"on={first}"])
    title = f"{restored.cfg.experiment_name} on {first}"
    with TrackedRun(store, restored.experiment, run_name=name, tags=tags) as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.log_dict(other.summary, "data/preprocessing.json")
        log_dataset_input(other.summary, name=first, context="evaluation")
        if other.skipped:
            mlflow.log_dict(other.skipped, "evaluation/skipped_aux.json")
        result, outputs = evaluation(restored.model, other, Path(tmp), title)
        metrics = log_evaluation(result, outputs, Path(tmp))
    own = {k: v for k, v in source.data.metrics.items() if k.startswith("test/")}
    return run.run_id, metrics, own
