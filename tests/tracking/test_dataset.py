"""The training data as an MLflow dataset input, and a dataset identity from the files' content:
ntuples copied to another folder (node-local scratch) keep the digest, the cache and the
registry's dataset check."""

from __future__ import annotations

import json
import shutil

import mlflow
import numpy as np
import pytest
import uproot

from calolab.errors import InputFileError
from calolab.registry.gates import dataset_gate
from calolab.tracking import TrackedRun, log_dataset_input
from calolab.tracking.dataset import DIGEST_LENGTH
from datamodules.reading import file_identity
from tests.datamodules import make_dm, write_sample


@pytest.fixture
def sample(tmp_path):
    files = write_sample(tmp_path / "data")
    dm = make_dm(tmp_path)
    dm.prepare_data()
    dm.setup()
    return tmp_path, files, dm


def test_dataset_input_has_name_digest_source_schema_and_counts(store, experiment, sample):
    root, files, dm = sample
    summary = dm.preprocessing_summary()
    with TrackedRun(store, experiment) as run:
        log_dataset_input(summary, name="photons")
    (inp,) = store.client().get_run(run.run_id).inputs.dataset_inputs
    ds = inp.dataset
    assert ds.name == "photons" and ds.digest == dm.digest[:DIGEST_LENGTH]
    assert {t.key: t.value for t in inp.tags}["mlflow.data.context"] == "training"
    assert ds.source_type == "local" and json.loads(ds.source) == {"uri": str(root / "data")}
    schema = json.loads(ds.schema)["mlflow_colspec"]
    names = [c["name"] for c in schema]
    assert names[:6] == ["EMB1", "EMB2", "EMB3", "TileBar0", "label", "weight"]
    assert {"aux.ph_pt", "aux.event_number"} <= set(names[6:])
    assert schema[1]["tensor-spec"] == {"dtype": "float32", "shape": [-1, 1, 7, 11]}
    profile = json.loads(ds.profile)
    expected = {s: len(dm.arrays(s)) for s in ("train", "val", "test")}
    assert profile["events"] == expected and profile["num_events"] == 400
    assert profile["signal"]["test"] == int(np.asarray(dm.arrays("test").label).sum())
    assert profile["digest"] == dm.digest


def test_runs_can_be_filtered_by_dataset(store, experiment, sample):
    _, _, dm = sample
    with TrackedRun(store, experiment) as run:
        log_dataset_input(dm.preprocessing_summary(), name="photons")
    with TrackedRun(store, experiment):
        mlflow.log_metric("x", 1.0)  # a run on no dataset
    exp_id = store.client().get_experiment_by_name(experiment).experiment_id
    found = store.client().search_runs([exp_id], f"dataset.digest = '{dm.digest[:DIGEST_LENGTH]}'")
    assert [r.info.run_id for r in found] == [run.run_id]


def test_source_is_the_files_folder(store, experiment, tmp_path):
    summary = {
        "digest": "ab" * 32,
        "files": [str(tmp_path / "ntuples" / "a.root"), str(tmp_path / "ntuples" / "b.root")],
        "input_names": ["EMB2"],
        "input_shapes": {"EMB2": [1, 7, 11]},
        "aux": ["ph_pt", "event_number"],
        "aux_dtypes": {"ph_pt": "float32", "event_number": "int64"},
        "counts": {"train": {"events": 7, "signal": 3, "background": 4}},
    }
    with TrackedRun(store, experiment) as run:
        log_dataset_input(summary, name="mine", context="evaluation")
    (inp,) = store.client().get_run(run.run_id).inputs.dataset_inputs
    assert json.loads(inp.dataset.source) == {"uri": str(tmp_path / "ntuples")}
    schema = json.loads(inp.dataset.schema)["mlflow_colspec"]
    assert schema[-1] == {
        "name": "aux.event_number",
        "type": "tensor",
        "tensor-spec": {"dtype": "int64", "shape": [-1]},
    }


def test_an_incomplete_summary_says_what_is_missing():
    with pytest.raises(ValueError, match=r"\['counts'\] are missing"):
        log_dataset_input({"digest": "x", "input_names": [], "input_shapes": {}}, name="x")


def test_copied_ntuples_keep_the_digest_and_reuse_the_cache(sample, monkeypatch):
    root, files, dm = sample
    scratch = root / "scratch" / "node-17"
    scratch.mkdir(parents=True)
    for k, f in enumerate(reversed(files)):  # other names, other order, new modification times
        shutil.copyfile(f, scratch / f"copy_{k}.root")

    def refuse(*args, **kwargs):
        raise AssertionError("ROOT was read although the cache exists")

    monkeypatch.setattr(uproot, "open", refuse)
    copied = make_dm(root, files=str(scratch / "*.root"))
    assert copied.digest == dm.digest
    copied.prepare_data()  # a cache hit: never opens ROOT
    copied.setup()
    np.testing.assert_array_equal(np.asarray(copied.arrays("test").label), np.asarray(dm.arrays("test").label))
    assert sorted(p.name for p in (root / "cache").iterdir()) == [dm.digest]
    assert dataset_gate(copied.digest, dm.digest, "1", force=False).passed


def test_identity_is_content_and_ignores_order(tmp_path):
    (a,) = write_sample(tmp_path / "a", n_files=1)
    (b,) = write_sample(tmp_path / "b", n_files=1)  # the same events written again: a new file
    ida, idb = file_identity([str(a)]), file_identity([str(b)])
    assert ida != idb
    assert file_identity([str(a), str(b)]) == file_identity([str(b), str(a)])
    with uproot.update(a) as f:  # updated in place: the same UUID, more bytes
        f["note"] = "appended"
    after = file_identity([str(a)])
    assert after[0][0] == ida[0][0] and after[0][1] > ida[0][1]


def test_a_file_that_is_not_root_is_named(tmp_path):
    (good,) = write_sample(tmp_path / "data", n_files=1)
    notes = tmp_path / "data" / "notes.root"
    notes.write_text("my notes, not a ROOT file\n" * 20)
    with pytest.raises(InputFileError, match=r"cannot read .*notes\.root as a ROOT file") as info:
        file_identity([str(good), str(notes)])
    assert info.value.__cause__ is not None and "photons_0" not in str(info.value)
    tiny = tmp_path / "data" / "tiny.root"
    tiny.write_bytes(b"root")
    with pytest.raises(InputFileError, match=r"tiny\.root is not a ROOT file: .* but it has 4 bytes"):
        file_identity([str(tiny)])
