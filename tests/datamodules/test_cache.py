"""The memory-mapped cache: hit without ROOT, miss, invalidation, atomicity."""

from __future__ import annotations

import os

import numpy as np
import pytest
import uproot

from datamodules.reading import TreeReader
from tests.datamodules import make_dm, photon_events, write_sample, write_tree

SPLITS = ("train", "val", "test")


@pytest.fixture
def scans(monkeypatch):
    """Counts the files the first (ROOT) pass opens."""
    calls = []
    original = TreeReader.scan

    def counting(self, path):
        calls.append(path)
        return original(self, path)

    monkeypatch.setattr(TreeReader, "scan", counting)
    return calls


def no_root(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("ROOT was opened although the cache exists")

    monkeypatch.setattr(uproot, "open", refuse)


def test_second_run_never_opens_root(tmp_path, monkeypatch):
    write_sample(tmp_path / "data")
    first = make_dm(tmp_path)
    first.prepare_data()
    first.setup()
    expected = {s: np.asarray(first.arrays(s).inputs["EMB2"]).copy() for s in SPLITS}
    no_root(monkeypatch)
    second = make_dm(tmp_path)
    second.prepare_data()
    second.setup("fit")
    assert second.digest == first.digest
    for s in SPLITS:
        a = second.arrays(s)
        assert isinstance(a.inputs["EMB2"], np.memmap)
        np.testing.assert_array_equal(np.asarray(a.inputs["EMB2"]), expected[s])
    batches = list(second.train_dataloader())
    assert sum(len(b[1]) for b in batches) == len(second.arrays("train"))


def test_missing_cache_is_built_once_and_prepare_data_is_idempotent(tmp_path, scans):
    write_sample(tmp_path / "data")
    dm = make_dm(tmp_path)
    dm.prepare_data()
    dm.prepare_data()
    dm.setup()
    dm.setup("fit")
    assert len(scans) == 2  # two files, scanned once each
    entries = [p.name for p in (tmp_path / "cache").iterdir()]
    assert entries == [dm.digest]


def test_setup_builds_a_missing_cache(tmp_path, scans):
    write_sample(tmp_path / "data")
    dm = make_dm(tmp_path)
    dm.setup()
    assert len(scans) == 2 and len(dm.arrays("train")) > 0


def test_input_file_change_invalidates(tmp_path, scans):
    """The identity is the files' content (ROOT UUID, size): a rewrite invalidates, a touch not."""
    files = write_sample(tmp_path / "data")
    dm = make_dm(tmp_path)
    dm.prepare_data()
    st = os.stat(files[1])
    os.utime(files[1], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    touched = make_dm(tmp_path)
    assert touched.digest == dm.digest
    touched.prepare_data()
    assert len(scans) == 2  # the cache was used
    write_tree(files[1], photon_events(200, first=200, seed=1))  # the same events, a new file
    rewritten = make_dm(tmp_path)
    assert rewritten.digest != dm.digest
    rewritten.prepare_data()
    assert len(scans) == 4
    write_sample(tmp_path / "data", n_files=3)  # a new file matching the glob
    grown = make_dm(tmp_path)
    assert grown.digest not in (dm.digest, rewritten.digest)


@pytest.mark.parametrize(
    "change",
    [
        {"selection": "ph_pt > 30000"},
        {"normalisation": "cluster"},
        {"split": {"val": 0.2, "test": 0.1}},
        {"split_salt": 1},
        {"class_weights": False},
        {"weight": "mu"},
        {"reweight": {"variables": ["ph_pt"], "bins": [[20e3, 50e3, 150e3]]}},
        {"inputs": {"EMB2": {"branch": "cells_EMB2", "shape": [7, 11]}}},
        {"aux": ["ph_pt"]},
        {"label": "is_unhealthy"},
        {"tree": "other"},
    ],
)
def test_config_that_changes_the_arrays_changes_the_digest(tmp_path, change):
    write_sample(tmp_path / "data")
    assert make_dm(tmp_path, **change).digest != make_dm(tmp_path).digest


@pytest.mark.parametrize(
    "change",
    [
        {"batch_size": 7},
        {"eval_batch_size": 9},
        {"num_workers": 3},
        {"device_resident": "never"},
        {"drop_last": True},
        {"seed": 5},
    ],
)
def test_batching_config_keeps_the_digest(tmp_path, change, monkeypatch):
    write_sample(tmp_path / "data")
    base = make_dm(tmp_path)
    base.prepare_data()
    other = make_dm(tmp_path, **change)
    assert other.digest == base.digest
    no_root(monkeypatch)
    other.prepare_data()
    other.setup()


def test_relative_paths_are_taken_from_the_cwd(tmp_path, monkeypatch):
    write_sample(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    rel = make_dm(tmp_path, files="data/*.root", cache_dir="cache")
    monkeypatch.chdir("/")
    assert rel.digest == make_dm(tmp_path).digest


def test_crash_while_building_leaves_no_cache(tmp_path, monkeypatch):
    write_sample(tmp_path / "data")
    from datamodules.calo import CaloDataModule

    original = CaloDataModule._fill_chunk
    calls = []

    def crash(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(CaloDataModule, "_fill_chunk", crash)
    dm = make_dm(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        dm.prepare_data()
    assert list((tmp_path / "cache").iterdir()) == []  # neither a final nor a temporary folder
    monkeypatch.setattr(CaloDataModule, "_fill_chunk", original)
    dm = make_dm(tmp_path)
    dm.prepare_data()
    dm.setup()
    assert sum(len(dm.arrays(s)) for s in SPLITS) == 400


def test_a_half_written_cache_folder_is_not_used(tmp_path, scans):
    write_sample(tmp_path / "data")
    dm = make_dm(tmp_path)
    stump = tmp_path / "cache" / dm.digest / "train"
    stump.mkdir(parents=True)  # no meta.json: incomplete
    (stump / "input_0.npy").write_bytes(b"garbage")
    dm.prepare_data()
    assert len(scans) == 2  # it rebuilt rather than use the stump
    dm.setup()
    assert sum(len(dm.arrays(s)) for s in SPLITS) == 400


def test_cached_arrays_are_copy_on_write(tmp_path):
    write_sample(tmp_path / "data")
    dm = make_dm(tmp_path)
    dm.setup()
    a = dm.arrays("train")
    before = float(np.asarray(a.inputs["EMB1"][0]).sum())
    a.inputs["EMB1"][0] = 123.0  # changes this process's view only
    fresh = make_dm(tmp_path)
    fresh.setup()
    assert float(np.asarray(fresh.arrays("train").inputs["EMB1"][0]).sum()) == pytest.approx(before)
