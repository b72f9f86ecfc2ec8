"""Reading ROOT inputs: fixed-size and jagged cells, selections, and one clear error per bad input."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

from calolab.errors import ConfigError, InputFileError, KeyInFileError
from tests.datamodules import SHAPES, fixed_inputs, make_dm, photon_events, write_sample, write_tree


def build(tmp_path, **kwargs):
    dm = make_dm(tmp_path, **kwargs)
    dm.prepare_data()
    dm.setup()
    return dm


def test_shapes_and_dtypes(tmp_path):
    write_sample(tmp_path / "data")
    dm = build(tmp_path)
    assert dm.input_names == list(SHAPES)
    assert dm.input_shapes == {k: (1, *v) for k, v in SHAPES.items()}
    total = 0
    for split in ("train", "val", "test"):
        a = dm.arrays(split)
        n = len(a.label)
        total += n
        for name, shape in SHAPES.items():
            assert a.inputs[name].shape == (n, 1, *shape)
            assert a.inputs[name].dtype == np.float32
        assert a.label.dtype == np.float32 and a.label.shape == (n,)
        assert a.weight.dtype == np.float32 and a.weight.shape == (n,)
        assert set(a.aux) == {"ph_pt", "ph_eta", "mu", "Reta", "event_number"}
        assert a.aux["event_number"].dtype == np.int64
        assert all(v.shape == (n,) for v in a.aux.values())
    assert total == 400


def test_values_follow_their_events(tmp_path):
    """Every cached row holds its own event's cells and aux values (no mix-up across splits)."""
    events = photon_events(300, first=1000, seed=3)
    (tmp_path / "data").mkdir()
    write_tree(tmp_path / "data" / "a.root", events)
    dm = build(tmp_path, normalisation="none")
    for split in ("train", "val", "test"):
        a = dm.arrays(split)
        rows = np.asarray(a.aux["event_number"]) - 1000
        np.testing.assert_array_equal(np.asarray(a.inputs["EMB2"])[:, 0], events["cells_EMB2"][rows])
        np.testing.assert_array_equal(np.asarray(a.aux["ph_pt"]), events["ph_pt"][rows])
        np.testing.assert_array_equal(np.asarray(a.label), events["truth_label"][rows].astype(np.float32))


def test_selection_is_applied(tmp_path):
    files = write_sample(tmp_path / "data")
    dm = build(tmp_path, selection="(ph_pt > 40000) & ~is_unhealthy")
    kept = sum(len(dm.arrays(s)) for s in ("train", "val", "test"))
    expected = 0
    for k, _ in enumerate(files):
        ev = photon_events(200, first=k * 200, seed=k)
        expected += int(((ev["ph_pt"] > 40000) & ~ev["is_unhealthy"]).sum())
    assert kept == expected
    pts = np.concatenate([np.asarray(dm.arrays(s).aux["ph_pt"]) for s in ("train", "val", "test")])
    assert pts.min() > 40000


def jagged_events(events, name="EMB2", drop_zero_fraction=0.3, seed=1):
    """The cells of ``cells_<name>`` as jagged (energy, ieta, iphi) lists, shuffled, some cells left out."""
    rng = np.random.default_rng(seed)
    cells = events[f"cells_{name}"].copy()
    cells[rng.random(cells.shape) < drop_zero_fraction] = 0.0  # zero cells are simply absent from the lists
    n, h, w = cells.shape
    ev, ie, ip = np.nonzero(cells)
    order = rng.permutation(len(ev))
    ev, ie, ip = ev[order], ie[order], ip[order]
    sort = np.argsort(ev, kind="stable")
    ev, ie, ip = ev[sort], ie[sort], ip[sort]
    counts = np.bincount(ev, minlength=n)
    e = cells[ev, ie, ip]
    rec = ak.zip(
        {
            "e": ak.unflatten(e.astype(np.float32), counts),
            "ieta": ak.unflatten(ie.astype(np.int32), counts),
            "iphi": ak.unflatten(ip.astype(np.int32), counts),
        }
    )
    fixed = dict(events)
    fixed[f"cells_{name}"] = cells
    return fixed, rec


def test_jagged_cells_equal_fixed_size(tmp_path):
    events = photon_events(250, seed=5)
    fixed, rec = jagged_events(events)
    (tmp_path / "data").mkdir()
    write_tree(tmp_path / "data" / "a.root", {**fixed, "cell": rec})  # branches cell_e, cell_ieta, cell_iphi
    inputs = fixed_inputs()
    jagged_inputs = {
        **inputs,
        "EMB2": {"branch": "cell_e", "eta_index": "cell_ieta", "phi_index": "cell_iphi", "shape": [7, 11]},
    }
    for normalisation in ("none", "layer", "cluster"):
        a = build(tmp_path, inputs=inputs, normalisation=normalisation, cache_dir=str(tmp_path / "c1"))
        b = build(tmp_path, inputs=jagged_inputs, normalisation=normalisation, cache_dir=str(tmp_path / "c2"))
        assert a.digest != b.digest
        for split in ("train", "val", "test"):
            for name in SHAPES:
                np.testing.assert_array_equal(
                    np.asarray(b.arrays(split).inputs[name]), np.asarray(a.arrays(split).inputs[name])
                )


def test_jagged_duplicate_cells_add_up(tmp_path):
    events = photon_events(3, seed=0)
    rec = ak.zip(
        {
            "e": ak.Array([[1.0, 2.0], [], [4.0]]),
            "ieta": ak.Array([[1, 1], [], [6]]),
            "iphi": ak.Array([[2, 2], [], [10]]),
        }
    )
    rec = ak.zip({k: ak.values_astype(rec[k], np.float32 if k == "e" else np.int32) for k in rec.fields})
    (tmp_path / "data").mkdir()
    write_tree(tmp_path / "data" / "a.root", {**events, "cell": rec})
    inputs = {"EMB2": {"branch": "cell_e", "eta_index": "cell_ieta", "phi_index": "cell_iphi", "shape": [7, 11]}}
    dm = build(tmp_path, inputs=inputs, normalisation="none", split={"val": 0.0, "test": 0.0}, aux=[])
    img = np.asarray(dm.arrays("train").inputs["EMB2"])[:, 0]
    assert img[0, 1, 2] == 3.0 and img[0].sum() == 3.0
    assert img[1].sum() == 0.0
    assert img[2, 6, 10] == 4.0


# -- errors --------------------------------------------------------------------------------------
def test_glob_matching_nothing_names_the_pattern(tmp_path):
    dm = make_dm(tmp_path, files=[str(tmp_path / "nowhere" / "*.root")])
    with pytest.raises(InputFileError, match=r"no input file matches .*nowhere/\*\.root"):
        dm.prepare_data()


def test_missing_plain_path(tmp_path):
    write_sample(tmp_path / "data")
    dm = make_dm(tmp_path, files=[str(tmp_path / "data" / "photons_0.root"), str(tmp_path / "data" / "photons_9.root")])
    with pytest.raises(InputFileError, match="photons_9.root.*does not exist"):
        dm.prepare_data()


def test_not_a_root_file(tmp_path):
    write_sample(tmp_path / "data")
    bad = tmp_path / "data" / "notes.root"
    bad.write_text("these are my notes, not a ROOT file\n" * 20)
    with pytest.raises(InputFileError, match=r"notes\.root") as info:
        build(tmp_path)
    assert "photons_0.root" not in str(info.value)
    assert info.value.__cause__ is not None


def test_truncated_root_file(tmp_path):
    (path,) = write_sample(tmp_path / "data", n_files=1, per_file=300)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(InputFileError, match=r"photons_0\.root") as info:
        build(tmp_path)
    assert info.value.__cause__ is not None


def test_bad_file_among_good_ones_is_not_skipped(tmp_path):
    write_sample(tmp_path / "data", n_files=3)
    (tmp_path / "data" / "photons_1.root").write_bytes(b"\0" * 1000)
    with pytest.raises(InputFileError, match=r"photons_1\.root"):
        build(tmp_path)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_missing_tree_suggests_close_names(tmp_path):
    write_sample(tmp_path / "data")
    with pytest.raises(KeyInFileError) as info:
        build(tmp_path, tree="photon")
    msg = str(info.value)
    assert "'photon' not found in" in msg and "photons_0.root" in msg and "did you mean 'photons'" in msg


def test_missing_branch_names_file_tree_and_suggestion(tmp_path):
    write_sample(tmp_path / "data")
    inputs = {**fixed_inputs(), "EMB2": {"branch": "cells_EMB22", "shape": [7, 11]}}
    with pytest.raises(KeyInFileError) as info:
        build(tmp_path, inputs=inputs)
    msg = str(info.value)
    assert "'cells_EMB22' not found in" in msg and "photons_0.root:photons" in msg and "'cells_EMB2'" in msg


def test_missing_aux_branch(tmp_path):
    write_sample(tmp_path / "data")
    with pytest.raises(KeyInFileError, match=r"'ph_ptt' not found in .*photons_0\.root:photons; did you mean 'ph_pt'"):
        build(tmp_path, aux=["ph_ptt"])


def test_fixed_shape_mismatch_says_expected_and_got(tmp_path):
    write_sample(tmp_path / "data")
    inputs = {**fixed_inputs(), "EMB2": {"branch": "cells_EMB2", "shape": [7, 12]}}
    with pytest.raises(InputFileError) as info:
        build(tmp_path, inputs=inputs)
    msg = str(info.value)
    assert "'cells_EMB2'" in msg and "photons_0.root" in msg and "(7, 12)" in msg and "(7, 11)" in msg


def test_fixed_config_on_jagged_branch(tmp_path):
    events = photon_events(20)
    _, rec = jagged_events(events)
    (tmp_path / "data").mkdir()
    write_tree(tmp_path / "data" / "a.root", {**events, "cell": rec})
    inputs = {"EMB2": {"branch": "cell_e", "shape": [7, 11]}}
    with pytest.raises(
        InputFileError, match=r"'cell_e' of .*a\.root:photons.*variable-length.*eta_index and phi_index"
    ):
        build(tmp_path, inputs=inputs)


def test_jagged_index_outside_window(tmp_path):
    events = photon_events(10)
    rec = ak.zip(
        {
            "e": ak.values_astype(ak.Array([[1.0]] * 9 + [[1.0, 2.0]]), np.float32),
            "ieta": ak.values_astype(ak.Array([[0]] * 9 + [[0, 7]]), np.int32),
            "iphi": ak.values_astype(ak.Array([[0]] * 9 + [[0, 3]]), np.int32),
        }
    )
    (tmp_path / "data").mkdir()
    write_tree(tmp_path / "data" / "a.root", {**events, "cell": rec})
    inputs = {"EMB2": {"branch": "cell_e", "eta_index": "cell_ieta", "phi_index": "cell_iphi", "shape": [7, 11]}}
    with pytest.raises(InputFileError) as info:
        build(tmp_path, inputs=inputs)
    msg = str(info.value)
    assert "1 events" in msg and "'cell_ieta'" in msg and "[0, 6]" in msg and "a.root" in msg


@pytest.mark.parametrize("branch", ["cells_EMB3", "ph_pt", "Reta", "w"])
def test_nan_or_inf_names_file_branch_and_count(tmp_path, branch):
    events = photon_events(50)
    events["w"] = np.ones(50, np.float32)
    values = events[branch]
    values[[3, 17]] = np.nan
    values[30] = np.inf
    (tmp_path / "data").mkdir()
    write_tree(tmp_path / "data" / "a.root", events)
    with pytest.raises(InputFileError) as info:
        build(tmp_path, weight="w")
    msg = str(info.value)
    assert f"'{branch}'" in msg and "a.root" in msg and "3 of 50" in msg and "NaN or inf" in msg


def test_nan_label(tmp_path):
    events = photon_events(50)
    events["truth_label"] = events["truth_label"].astype(np.float32)
    events["truth_label"][5] = np.nan
    (tmp_path / "data").mkdir()
    write_tree(tmp_path / "data" / "a.root", events)
    with pytest.raises(
        InputFileError, match=r"1 of 50 selected events have NaN or inf in branch 'truth_label' of .*a\.root"
    ):
        build(tmp_path)


def test_labels_must_be_zero_or_one(tmp_path):
    events = photon_events(50)
    events["truth_label"][[1, 2]] = 2
    (tmp_path / "data").mkdir()
    write_tree(tmp_path / "data" / "a.root", events)
    with pytest.raises(
        InputFileError, match=r"0 \(background\) or 1 \(signal\).*'truth_label' of .*a\.root.*2 events.*\[2\]"
    ):
        build(tmp_path)


def test_empty_selection_names_selection_and_files(tmp_path):
    write_sample(tmp_path / "data")
    with pytest.raises(ConfigError) as info:
        build(tmp_path, selection="ph_pt < 0")
    msg = str(info.value)
    assert "'ph_pt < 0'" in msg and "photons_0.root" in msg and "photons_1.root" in msg


def test_selection_with_unknown_branch(tmp_path):
    write_sample(tmp_path / "data")
    with pytest.raises(KeyInFileError) as info:
        build(tmp_path, selection="ph_ptt > 25000")
    msg = str(info.value)
    assert (
        "'ph_ptt' not found" in msg and "photons_0.root" in msg and "did you mean 'ph_pt'" in msg and "selection" in msg
    )


@pytest.mark.parametrize("selection", ["ph_pt > 1 && ph_eta < 1", "(ph_pt > 1) and (ph_eta < 1)", "ph_pt >"])
def test_selection_syntax_is_checked_up_front(tmp_path, selection):
    with pytest.raises(ConfigError, match="selection"):
        make_dm(tmp_path, selection=selection)


def test_selection_must_be_boolean(tmp_path):
    write_sample(tmp_path / "data")
    with pytest.raises(ConfigError, match=r"'ph_pt \* 2' must give one true/false per event"):
        build(tmp_path, selection="ph_pt * 2")


def test_event_number_must_be_integer(tmp_path):
    events = photon_events(20)
    events["event_number"] = events["event_number"].astype(np.float64)
    (tmp_path / "data").mkdir()
    write_tree(tmp_path / "data" / "a.root", events)
    with pytest.raises(InputFileError, match=r"'event_number' of .*a\.root:photons must hold integers"):
        build(tmp_path)


def test_empty_tree_without_selection(tmp_path):
    (tmp_path / "data").mkdir()
    write_tree(tmp_path / "data" / "a.root", photon_events(0))
    with pytest.raises(InputFileError, match=r"holds no events.*a\.root"):
        build(tmp_path)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"inputs": {"EMB2": {"branch": "cells_EMB2", "shap": [7, 11]}}}, "unknown key 'shap'; did you mean 'shape'"),
        ({"inputs": {"EMB2": {"branch": "cells_EMB2", "shape": [7]}}}, r"shape must be \[n_eta, n_phi\]"),
        (
            {"inputs": {"EMB2": {"branch": "cell_e", "eta_index": "i", "shape": [7, 11]}}},
            "both eta_index and phi_index",
        ),
        ({"inputs": {}}, "inputs must map"),
        ({"split": {"val": 0.5, "test": 0.5}}, r"val \+ test < 1"),
        ({"split": {"valid": 0.1}}, "did you mean 'val'"),
        ({"normalisation": "layers"}, "did you mean 'layer'"),
        ({"device_resident": "sometimes"}, "device_resident must be one of"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"reweight": {"variables": ["ph_pt"], "bins": [[3, 2]]}}, "strictly increasing"),
        ({"reweight": {"variables": ["ph_pt"], "bins": [[1, 2]], "abs": [1]}}, "reweight.abs"),
    ],
)
def test_bad_config_is_refused_up_front(tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        make_dm(tmp_path, **overrides)
