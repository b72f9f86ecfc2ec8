"""JetImageDataModule end to end: images and aux in the cache, cache hits, standardisation, errors."""

from __future__ import annotations

import inspect
import json

import awkward as ak
import numpy as np
import pytest
import torch
import uproot
from hydra.utils import instantiate
from omegaconf import OmegaConf

from calolab.app import CONF_DIR
from calolab.errors import ConfigError, InputFileError, KeyInFileError
from datamodules import BatchLoader, JetImageDataModule
from datamodules.jet_images import Constituents, JetImager
from datamodules.jet_observables import charged_multiplicity, constituent_width
from tests.datamodules import write_tree
from tests.datamodules.jet_samples import jet_events, make_jet_dm, write_jets

SPLITS = ("train", "val", "test")


def read_back(tmp_path):
    return uproot.concatenate(str(tmp_path / "data" / "*.root") + ":jets")


@pytest.fixture
def dm(tmp_path):
    write_jets(tmp_path / "data")
    dm = make_jet_dm(tmp_path)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_images_and_aux_match_a_direct_build(dm, tmp_path):
    assert dm.input_names == ["image"] and dm.input_shapes == {"image": (2, 15, 15)}
    assert sum(len(dm.arrays(s)) for s in SPLITS) == 300
    events = read_back(tmp_path)
    by_event = {int(e): i for i, e in enumerate(ak.to_numpy(events.event_number))}
    jets = Constituents.from_awkward(events.const_pt, events.const_eta, events.const_phi, events.const_charge)
    axis = ak.to_numpy(events.jet_eta), ak.to_numpy(events.jet_phi)
    expected = JetImager(shape=(15, 15), half_width=(0.75, 0.75), channels=["pt", "charged_count"]).build(jets, *axis)
    width = constituent_width(jets.pt, jets.eta, jets.phi, jets.counts, *axis)
    n_charged = charged_multiplicity(jets.pt, jets.charge, jets.counts)
    for split in SPLITS:
        a = dm.arrays(split)
        rows = [by_event[int(e)] for e in np.asarray(a.aux["event_number"])]
        images = np.asarray(a.inputs["image"])
        assert images.dtype == np.float32 and images.shape == (len(rows), 2, 15, 15)
        np.testing.assert_allclose(images, expected.images[rows], rtol=1e-6)
        assert list(a.aux) == ["jet_pt", "jet_m", "jet_nconst", "jet_width", "n_charged", "image_pt", "event_number"]
        np.testing.assert_array_equal(np.asarray(a.aux["jet_pt"]), ak.to_numpy(events.jet_pt)[rows])  # MeV, as written
        np.testing.assert_allclose(np.asarray(a.aux["jet_width"]), width[rows], rtol=1e-5)
        np.testing.assert_array_equal(np.asarray(a.aux["n_charged"]), n_charged[rows])
        np.testing.assert_allclose(np.asarray(a.aux["image_pt"]), expected.pt_in_image[rows], rtol=1e-6)
        # class balance from the shared preprocessing: equal signal and background weight per split
        label, weight = np.asarray(a.label), np.asarray(a.weight)
        assert weight[label == 1].sum() == pytest.approx(weight[label == 0].sum(), rel=1e-5)


def test_batches_and_summary(dm):
    for name in ("train", "val", "test", "predict"):
        loader = getattr(dm, f"{name}_dataloader")()
        assert isinstance(loader, BatchLoader)
        inputs, label, weight = next(iter(loader))
        assert isinstance(inputs, tuple) and len(inputs) == 1
        assert inputs[0].dtype == torch.float32 and inputs[0].shape[1:] == (2, 15, 15)
        assert label.shape == weight.shape == (len(inputs[0]),)
    summary = json.loads(json.dumps(dm.preprocessing_summary()))
    assert summary["digest"] == dm.digest and summary["input_shapes"] == {"image": [2, 15, 15]}
    assert summary["image"]["channels"] == ["pt", "charged_count"] and summary["standardisation"] is None
    assert set(summary["derived_aux"]) == {"jet_width", "n_charged", "image_pt"}
    assert summary["aux_dtypes"]["n_charged"] == "int32" and summary["aux_dtypes"]["jet_width"] == "float32"
    assert sum(c["events"] for c in summary["counts"].values()) == 300


def test_second_run_reads_no_root(dm, tmp_path, monkeypatch):
    expected = np.asarray(dm.arrays("val").inputs["image"]).copy()

    def refuse(*args, **kwargs):
        raise AssertionError("ROOT was opened although the cache exists")

    monkeypatch.setattr(uproot, "open", refuse)
    again = make_jet_dm(tmp_path, batch_size=7)  # batching does not change the digest
    again.prepare_data()
    again.setup()
    assert again.digest == dm.digest
    np.testing.assert_array_equal(np.asarray(again.arrays("val").inputs["image"]), expected)


@pytest.mark.parametrize(
    "change",
    [
        {"shape": [17, 15]},
        {"half_width": [0.8, 0.75]},
        {"channels": ["pt"]},
        {"centre": "leading_subjet"},
        {"rotate": "principal_axis"},
        {"flip": True},
        {"normalise": True},
        {"standardise": True},
        {"subjet_radius": 0.2},
        {"jet_axis": {"eta": "jet_eta", "phi": "mu"}},
        {"aux": ["jet_pt"]},
    ],
)
def test_image_config_changes_the_digest(tmp_path, change):
    write_jets(tmp_path / "data", n_files=1, per_file=20)
    assert make_jet_dm(tmp_path, **change).digest != make_jet_dm(tmp_path).digest


def test_standardisation_uses_the_training_split_only(tmp_path):
    write_jets(tmp_path / "data")
    raw = make_jet_dm(tmp_path, normalise=True)
    std = make_jet_dm(tmp_path, normalise=True, standardise=True)
    std.setup()
    summary = std.preprocessing_summary()
    mean, sigma = np.array(summary["standardisation"]["mean"]), np.array(summary["standardisation"]["std"])
    assert mean.shape == sigma.shape == (2, 15, 15)
    train_raw = np.asarray(raw.arrays("train").inputs["image"], np.float64)
    np.testing.assert_allclose(mean, train_raw.mean(axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(sigma, train_raw.std(axis=0), rtol=1e-4, atol=1e-7)
    assert (sigma == 0).any() and (sigma > 0).any()  # corner pixels never see a constituent
    train = np.asarray(std.arrays("train").inputs["image"], np.float64)
    varying = sigma > 0
    np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(train.std(axis=0)[varying], 1.0, rtol=1e-3)
    scale = np.where(varying, 1.0 / np.where(varying, sigma, 1.0), 1.0)
    for split in ("val", "test"):  # the training split's numbers, not their own
        expected = (np.asarray(raw.arrays(split).inputs["image"]) - mean) * scale
        np.testing.assert_allclose(np.asarray(std.arrays(split).inputs["image"]), expected, atol=1e-4)
        assert np.abs(np.asarray(std.arrays(split).inputs["image"]).mean(axis=0)).max() > 1e-3


def test_tree_without_constituents_names_the_branch(tmp_path):
    path = tmp_path / "data" / "jets_0.root"
    path.parent.mkdir()
    write_tree(path, jet_events(30, constituent_name="constit"), "jets")  # constit_pt, constit_eta, ...
    with pytest.raises(KeyInFileError) as err:
        make_jet_dm(tmp_path).prepare_data()
    text = str(err.value)
    assert "'const_pt' not found" in text and f"{path}:jets" in text and "did you mean 'constit_pt'" in text
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_range_that_holds_nothing_is_one_error(tmp_path):
    files = write_jets(tmp_path / "data", n_files=1, per_file=40)
    # the image 'around' the pileup mu (0-50) instead of the jet axis: no constituent is near
    dm = make_jet_dm(tmp_path, centre=None, jet_axis={"eta": "mu", "phi": "jet_phi"})
    with pytest.raises(ConfigError, match=r"\|eta\| < 0.75, \|phi\| < 0.75 around the jet axis") as err:
        dm.prepare_data()
    assert str(files[0]) in str(err.value)
    assert not any((tmp_path / "cache").iterdir())  # nothing half-built is left


def test_unknown_channel_lists_the_valid_names(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'charged_count'") as err:
        make_jet_dm(tmp_path, channels=["pt", "charge_count"])
    assert "valid channels are ['pt', 'charged_pt', 'neutral_pt', 'count', 'charged_count']" in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"constituents": {"pt": "const_pt", "eta": "const_eta", "phi": "const_phi", "chrage": "x"}}, "did you mean 'charge'"),
        ({"constituents": {"pt": "const_pt", "eta": "const_eta", "phi": "const_phi", "charge": None}}, "need the constituents' charge"),
        ({"jet_axis": {"eta": "jet_eta"}}, r"jet_axis.phi must be a non-empty name"),
        ({"standardise": "yes"}, "standardise must be true or false"),
    ],
)  # fmt: skip
def test_bad_config(tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        make_jet_dm(tmp_path, **overrides)


def test_nan_constituents_name_the_branch(tmp_path):
    events = jet_events(30)
    const = events["const"]
    eta = ak.to_numpy(ak.flatten(const.eta)).copy()
    eta[5] = np.nan
    events["const"] = ak.with_field(const, ak.unflatten(eta, ak.num(const.eta)), "eta")
    path = tmp_path / "data" / "jets_0.root"
    path.parent.mkdir()
    write_tree(path, events, "jets")
    with pytest.raises(
        InputFileError, match=rf"1 of 30 selected jets have NaN or inf in constituent branch 'const_eta' of {path}"
    ):
        make_jet_dm(tmp_path).prepare_data()


def test_no_charge_needed_reads_no_charge(tmp_path):
    events = jet_events(40)
    events["const"] = events["const"][["pt", "eta", "phi"]]
    path = tmp_path / "data" / "jets_0.root"
    path.parent.mkdir()
    write_tree(path, events, "jets")
    dm = make_jet_dm(
        tmp_path,
        channels=["pt", "count"],
        aux=["jet_width"],
        constituents={"pt": "const_pt", "eta": "const_eta", "phi": "const_phi", "charge": None},
    )
    dm.setup()
    assert len(dm.arrays("train")) > 0


@pytest.mark.parametrize(("name", "shape"), [("wtag", (1, 25, 25)), ("qg", (3, 33, 33))])
def test_shipped_configs_build_on_generator_like_files(tmp_path, name, shape):
    cfg = OmegaConf.load(CONF_DIR / "data" / f"{name}.yaml")
    assert set(cfg) - {"_target_"} == set(inspect.signature(JetImageDataModule.__init__).parameters) - {"self"}
    folder = {"wtag": "wjets", "qg": "qgjets"}[name]
    write_jets(tmp_path / "data" / folder, n_files=1, per_file=120)
    root = OmegaConf.create({"paths": {"data_dir": str(tmp_path / "data")}, "data": cfg})
    dm = instantiate(root.data, _convert_="all")
    assert dm.input_shapes == {"image": shape} and dm.cache_dir == tmp_path / "data" / "cache"
    dm.setup()
    a = dm.arrays("train")
    assert a.inputs["image"].shape[1:] == shape and set(cfg.aux) | {"event_number"} == set(a.aux)
    assert np.isfinite(np.asarray(a.inputs["image"])).all()


def test_selection_keeps_the_selected_jets_only(tmp_path):
    write_jets(tmp_path / "data")
    events = read_back(tmp_path)
    dm = make_jet_dm(tmp_path, selection="jet_nconst >= 20")
    dm.setup()
    kept = np.concatenate([np.asarray(dm.arrays(s).aux["jet_nconst"]) for s in SPLITS])
    assert len(kept) == int((ak.to_numpy(events.jet_nconst) >= 20).sum()) > 0 and kept.min() >= 20
    a = dm.arrays("train")
    in_image = np.asarray(a.inputs["image"])[:, 1].sum(axis=(1, 2))  # the charged_count channel
    n_charged = np.asarray(a.aux["n_charged"])
    assert (in_image <= n_charged).all() and (in_image == n_charged).mean() > 0.9
