"""CaloDataModule end to end: batches, summary, the shipped config, and a real Trainer.fit."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from calolab.app import CONF_DIR
from datamodules import BatchLoader, CaloDataModule
from tests.datamodules import SHAPES, make_dm, photon_events, write_sample, write_tree

# Lightning 2.6's CombinedLoader builds a deprecated torch LeafSpec on every fit (torch 2.13)
pytestmark = pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning")


@pytest.fixture
def dm(tmp_path):
    write_sample(tmp_path / "data")
    dm = make_dm(tmp_path)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_batches_of_every_loader(dm):
    loaders = {
        "train": dm.train_dataloader(),
        "val": dm.val_dataloader(),
        "test": dm.test_dataloader(),
        "predict": dm.predict_dataloader(),
    }
    for name, loader in loaders.items():
        assert isinstance(loader, BatchLoader)
        split = "test" if name == "predict" else name
        batches = list(loader)
        assert len(batches) == len(loader) > 0
        inputs, label, weight = batches[0]
        assert isinstance(inputs, tuple) and len(inputs) == len(dm.input_names)
        for x, name_ in zip(inputs, dm.input_names):
            assert x.dtype == torch.float32 and x.shape[1:] == dm.input_shapes[name_]
            assert x.shape[0] == len(label)
        assert label.dtype == torch.float32 and weight.dtype == torch.float32 and label.shape == weight.shape
        assert sum(len(b[1]) for b in batches) == len(dm.arrays(split))
    assert len(loaders["train"]) == -(-len(dm.arrays("train")) // 16)
    assert len(loaders["val"]) == -(-len(dm.arrays("val")) // 64)
    # evaluation batches are in cache order: predictions line up with arrays("test")
    test_labels = torch.cat([b[1] for b in dm.predict_dataloader()]).numpy()
    np.testing.assert_array_equal(test_labels, np.asarray(dm.arrays("test").label))


def test_summary_is_json_and_consistent(dm):
    summary = json.loads(json.dumps(dm.preprocessing_summary()))
    assert summary["digest"] == dm.digest and len(dm.digest) == 64
    assert summary["normalisation"] == "layer"
    assert summary["input_names"] == list(SHAPES)
    assert summary["input_shapes"] == {k: [1, *v] for k, v in SHAPES.items()}
    assert summary["split"] == {"train": 0.7, "val": 0.15, "test": 0.15}
    counts = summary["counts"]
    assert sum(c["events"] for c in counts.values()) == 400
    for split, c in counts.items():
        assert c["signal"] + c["background"] == c["events"] == len(dm.arrays(split))
        assert c["signal"] == int((np.asarray(dm.arrays(split).label) == 1).sum())


def test_unknown_split_name(dm):
    with pytest.raises(Exception, match="did you mean 'train'"):
        dm.arrays("trian")


def test_device_resident_choice_on_cpu(tmp_path, dm):
    assert dm._resident(torch.device("cpu")) is False  # auto: the memory maps are already in memory
    always = make_dm(tmp_path, device_resident="always")
    always.setup()
    assert always._resident(torch.device("cpu")) is True
    batch = next(iter(always.train_dataloader()))
    assert batch[0][0].device.type == "cpu"


class TinyNet(pl.LightningModule):
    """A linear model on the concatenated layer images, with a weighted BCE loss."""

    def __init__(self, n_features: int):
        super().__init__()
        self.linear = torch.nn.Linear(n_features, 1)
        self.train_batches: list[torch.Tensor] = []
        self.val_events = 0

    def forward(self, *inputs):
        return self.linear(torch.cat([x.flatten(1) for x in inputs], dim=1)).squeeze(1)

    def training_step(self, batch, batch_idx):
        inputs, label, weight = batch
        self.train_batches.append(label.detach().clone())
        loss = torch.nn.functional.binary_cross_entropy_with_logits(self(*inputs), label, weight=weight)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        inputs, label, weight = batch
        self.val_events += len(label)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(self(*inputs), label, weight=weight)
        self.log("val/loss", loss)

    def test_step(self, batch, batch_idx):
        self.validation_step(batch, batch_idx)

    def predict_step(self, batch, batch_idx):
        return torch.sigmoid(self(*batch[0]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def make_trainer(**kwargs):
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        **kwargs,
    )


def test_trainer_fits_two_epochs(tmp_path):
    write_sample(tmp_path / "data")
    dm = make_dm(tmp_path)
    n_features = sum(h * w for h, w in SHAPES.values())
    model = TinyNet(n_features)
    trainer = make_trainer(max_epochs=2)
    trainer.fit(model, datamodule=dm)
    n_train, n_val = len(dm.arrays("train")), len(dm.arrays("val"))
    per_epoch = -(-n_train // 16)
    assert trainer.current_epoch == 2 and trainer.global_step == 2 * per_epoch
    assert trainer.num_training_batches == per_epoch
    epoch0, epoch1 = torch.cat(model.train_batches[:per_epoch]), torch.cat(model.train_batches[per_epoch:])
    assert len(epoch0) == len(epoch1) == n_train
    assert not torch.equal(epoch0, epoch1)  # reshuffled between epochs
    a = dm.arrays("train")
    for epoch, seen in ((0, epoch0), (1, epoch1)):  # epoch e is permuted with seed + e
        ref = BatchLoader(
            [],
            torch.from_numpy(np.asarray(a.label)),
            torch.from_numpy(np.asarray(a.weight)),
            batch_size=16,
            shuffle=True,
            seed=dm.seed + epoch,
        )
        assert torch.equal(torch.cat([b[1] for b in ref]), seen)
    assert model.val_events == 2 * n_val
    assert np.isfinite(float(trainer.callback_metrics["train/loss"]))


def test_trainer_respects_limit_train_batches(tmp_path):
    write_sample(tmp_path / "data")
    dm = make_dm(tmp_path, num_workers=2)
    model = TinyNet(sum(h * w for h, w in SHAPES.values()))
    trainer = make_trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=1)
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 6 and len(model.train_batches) == 6
    assert model.val_events == 2 * min(64, len(dm.arrays("val")))
    model.val_events = 0
    trainer.test(model, datamodule=dm, verbose=False)
    assert model.val_events == len(dm.arrays("test"))
    predictions = trainer.predict(model, datamodule=dm)
    assert sum(len(p) for p in predictions) == len(dm.arrays("test"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_arrays_move_to_the_gpu_once(tmp_path):
    write_sample(tmp_path / "data")
    dm = make_dm(tmp_path)
    model = TinyNet(sum(h * w for h, w in SHAPES.values()))
    trainer = pl.Trainer(
        accelerator="gpu",
        devices=1,
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        log_every_n_steps=1,
    )
    trainer.fit(model, datamodule=dm)
    assert dm._resident_on == {"cuda:0": True}
    loader = dm.train_dataloader()
    assert loader.device.type == "cuda" and next(iter(loader))[0][0].device.type == "cuda"


def test_shipped_config_keys_are_the_constructor_arguments(tmp_path):
    cfg = OmegaConf.load(CONF_DIR / "data" / "photon_id.yaml")
    params = set(inspect.signature(CaloDataModule.__init__).parameters) - {"self"}
    assert set(cfg) - {"_target_"} == params
    assert cfg._target_ == "datamodules.calo.CaloDataModule"


def test_shipped_config_builds_on_a_photon_sample(tmp_path):
    """conf/data/photon_id.yaml, with its paths resolved into tmp_path, on the generator's branches."""
    cfg = OmegaConf.load(CONF_DIR / "data" / "photon_id.yaml")
    sample = tmp_path / "data" / "photons"
    sample.mkdir(parents=True)
    events = photon_events(300)
    rw_vars = cfg.reweight.variables if cfg.reweight else []
    for name in [cfg.weight, *cfg.aux, *rw_vars]:  # the generator's other branches, as dummies
        if name and name not in events:
            events[name] = np.ones(300, np.int32 if name == "truth_pdgid" else np.float32)
    write_tree(sample / "photons_000.root", events)
    root = OmegaConf.create(
        {"paths": {"data_dir": str(tmp_path / "data")}, "data": OmegaConf.load(CONF_DIR / "data" / "photon_id.yaml")}
    )
    dm = instantiate(root.data, _convert_="all")
    assert dm.cache_dir == tmp_path / "data" / "cache"
    assert dm.input_shapes == {"EMB1": (1, 56, 3), "EMB2": (1, 7, 11), "EMB3": (1, 4, 11), "TileBar0": (1, 2, 3)}
    assert dm.batch_size == 32
    dm.prepare_data()
    dm.setup()
    assert "Reta" in dm.arrays("test").aux and len(dm.arrays("train")) > 150
    assert dm.preprocessing_summary()["reweight"]["variables"] == ["ph_pt", "ph_eta"]
