"""BinaryClassifier: a real fit, the weighted loss by hand, schedulers, compile wiring, checkpoint round trip."""

from __future__ import annotations

import functools
import math

import pytest
import pytorch_lightning as pl
import torch

from calolab.errors import ConfigError
from lightning_modules import BinaryClassifier
from lightning_modules.classifier import factory_config, weighted_bce_with_logits
from lightning_modules.nets import PhotonCNN

SHAPES = {"EMB2": (1, 7, 11), "TileBar0": (1, 2, 3)}
ADAM = functools.partial(torch.optim.Adam, lr=1e-3)

# Lightning 2.6's CombinedLoader builds a deprecated torch LeafSpec on every fit/validate (torch 2.13)
pytestmark = pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning")


class Batches:
    """A re-iterable of ready batches ``((inputs...), label, weight)``, as the data module yields them."""

    def __init__(self, batches: list) -> None:
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int):
        return self.batches[index]


def make_batches(n_batches: int, batch_size: int = 32, seed: int = 0) -> Batches:
    """Separable events in the data module's format: signal is a narrow EMB2 core, background leaks into Tile."""
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n_batches):
        label = (torch.rand(batch_size, generator=gen) < 0.5).float()
        emb2 = torch.randn(batch_size, *SHAPES["EMB2"], generator=gen)
        tile = torch.randn(batch_size, *SHAPES["TileBar0"], generator=gen)
        emb2[:, 0, 3, 4:7] += 2.0 * label.view(-1, 1)
        tile += 1.5 * (1 - label).view(-1, 1, 1, 1)
        weight = 0.5 + torch.rand(batch_size, generator=gen)
        batches.append(((emb2, tile), label, weight))
    return Batches(batches)


def small_net(seed: int = 0) -> PhotonCNN:
    torch.manual_seed(seed)
    return PhotonCNN(SHAPES, channels=[4, 8], dense=[16])


def trainer(**kwargs) -> pl.Trainer:
    options = dict(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return pl.Trainer(**(options | kwargs))


class EpochMetrics(pl.Callback):
    """Records the logged metrics at the end of every validation epoch."""

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.history.append({k: float(v) for k, v in trainer.callback_metrics.items()})


def bce_by_hand(logits, labels, weights) -> float:
    total = norm = 0.0
    for z, y, w in zip(logits.tolist(), labels.tolist(), weights.tolist()):
        p = 1.0 / (1.0 + math.exp(-z))
        total += -w * (y * math.log(p) + (1 - y) * math.log(1 - p))
        norm += w
    return total / norm


def test_weighted_loss_equals_hand_computation():
    logits = torch.tensor([2.0, -1.0, 0.3, -4.0])
    labels = torch.tensor([1.0, 0.0, 0.0, 1.0])
    weights = torch.tensor([1.0, 0.5, 2.0, 3.0])
    loss = weighted_bce_with_logits(logits, labels, weights)
    assert loss.item() == pytest.approx(bce_by_hand(logits, labels, weights), rel=1e-6)
    # normalised by the weight sum: a global scale of the weights changes nothing, a relative one does
    assert weighted_bce_with_logits(logits, labels, 7 * weights).item() == pytest.approx(loss.item(), rel=1e-6)
    assert weighted_bce_with_logits(logits, labels, torch.ones(4)).item() != pytest.approx(loss.item(), rel=1e-3)
    assert weighted_bce_with_logits(logits, labels, torch.zeros(4)).item() == 0.0


def test_epoch_loss_is_the_weighted_mean_over_all_events():
    net = small_net().eval()
    batches = make_batches(3, batch_size=16, seed=5)
    module = BinaryClassifier(net, ADAM)
    (metrics,) = trainer().validate(module, dataloaders=batches, verbose=False)
    with torch.no_grad():
        logits = torch.cat([net(*inputs) for inputs, _, _ in batches])
    labels = torch.cat([b[1] for b in batches])
    weights = torch.cat([b[2] for b in batches])
    assert metrics["val/loss"] == pytest.approx(bce_by_hand(logits, labels, weights), rel=1e-5)


def test_fit_learns_separable_events():
    train, val = make_batches(16, seed=0), make_batches(4, seed=1)
    module = BinaryClassifier(small_net(), functools.partial(torch.optim.Adam, lr=3e-3))
    (before,) = trainer().validate(module, dataloaders=val, verbose=False)
    record = EpochMetrics()
    fit = trainer(callbacks=[record])
    fit.fit(module, train_dataloaders=train, val_dataloaders=val)
    after = fit.callback_metrics
    print(f"val/auc before {before['val/auc']:.3f}, per epoch {[round(h['val/auc'], 3) for h in record.history]}")
    assert set(after) >= {"train/loss", "val/loss", "val/auc"}
    assert len(record.history) == 2
    assert after["val/auc"] > 0.8
    assert after["val/auc"] > before["val/auc"] + 0.05
    assert after["val/loss"] < before["val/loss"]
    (tested,) = fit.test(module, dataloaders=val, verbose=False)
    assert tested["test/auc"] == pytest.approx(float(after["val/auc"]), abs=1e-6)
    scores = torch.cat(fit.predict(module, dataloaders=val))
    assert scores.shape == (4 * 32,) and scores.min() >= 0 and scores.max() <= 1


def test_predict_step_takes_inputs_alone_or_full_batches():
    module = BinaryClassifier(small_net().eval(), ADAM)
    inputs, label, weight = make_batches(1, batch_size=5)[0]
    full = module.predict_step((inputs, label, weight), 0)
    assert full.shape == (5,)
    assert torch.equal(full, module.predict_step(inputs, 0))
    assert torch.allclose(full, torch.sigmoid(module.net(*inputs)))


def test_step_lr_scheduler_steps_per_epoch():
    step = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)
    module = BinaryClassifier(small_net(), ADAM, scheduler=step)
    fit = trainer()
    fit.fit(module, train_dataloaders=make_batches(2), val_dataloaders=make_batches(1, seed=1))
    assert fit.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3 * 0.25)


def test_plateau_scheduler_follows_val_loss():
    plateau = functools.partial(torch.optim.lr_scheduler.ReduceLROnPlateau, mode="min", patience=0)
    module = BinaryClassifier(small_net(), ADAM, scheduler=plateau)
    fit = trainer()
    fit.fit(module, train_dataloaders=make_batches(2), val_dataloaders=make_batches(1, seed=1))
    (config,) = fit.lr_scheduler_configs
    assert config.monitor == "val/loss"
    assert isinstance(config.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


def test_optimizer_must_build_an_optimizer():
    module = BinaryClassifier(small_net(), lambda params: "not an optimiser")
    with pytest.raises(ConfigError, match="Optimizer"):
        module.configure_optimizers()
    with pytest.raises(ConfigError, match="net must be"):
        BinaryClassifier("net", ADAM)


def test_compile_compiles_the_net_in_place_only_when_fitting(monkeypatch):
    calls = []

    def fake_compile(fn, *args, **kwargs):  # inductor takes a minute on CPU; the wiring is what is tested
        calls.append(fn)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    module = BinaryClassifier(small_net(), ADAM, compile=True)
    keys = sorted(module.state_dict())
    module.setup("validate")
    assert calls == []
    module.setup("fit")
    assert len(calls) == 1
    assert sorted(module.state_dict()) == keys  # no "_orig_mod." prefixes: checkpoints and export unchanged
    BinaryClassifier(small_net(), ADAM).setup("fit")
    assert len(calls) == 1


def test_optimizer_partial_is_kept_as_plain_config():
    assert factory_config(functools.partial(torch.optim.Adam, lr=1e-4, betas=(0.9, 0.99))) == {
        "_target_": "torch.optim.adam.Adam",
        "_partial_": True,
        "lr": 1e-4,
        "betas": [0.9, 0.99],
    }
    assert factory_config(torch.optim.SGD) == {"_target_": "torch.optim.sgd.SGD", "_partial_": True}
    assert factory_config(lambda params: torch.optim.SGD(params, lr=1)) is None
    assert factory_config(functools.partial(torch.optim.Adam, lr=torch.tensor(1e-4))) is None


def test_checkpoint_round_trip(tmp_path):
    plateau = functools.partial(torch.optim.lr_scheduler.ReduceLROnPlateau, factor=0.5)
    module = BinaryClassifier(small_net(), functools.partial(torch.optim.Adam, lr=1e-4), scheduler=plateau)
    fit = trainer(max_epochs=1)
    val = make_batches(1, seed=1)
    fit.fit(module, train_dataloaders=make_batches(2), val_dataloaders=val)
    path = tmp_path / "model.ckpt"
    fit.save_checkpoint(path)

    # plain hyper-parameters: loads with torch's default weights_only=True
    stored = torch.load(path, weights_only=True)["hyper_parameters"]
    assert stored["optimizer"] == {"_target_": "torch.optim.adam.Adam", "_partial_": True, "lr": 1e-4}
    assert stored["scheduler"]["_target_"] == "torch.optim.lr_scheduler.ReduceLROnPlateau"

    reloaded = BinaryClassifier.load_from_checkpoint(path, net=small_net(seed=99))
    original, restored = module.state_dict(), reloaded.state_dict()
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[k], restored[k]) for k in original)
    inputs = val[0][0]
    module.eval(), reloaded.eval()
    with torch.no_grad():
        assert torch.equal(module(*inputs), reloaded(*inputs))
    config = reloaded.configure_optimizers()
    assert isinstance(config["optimizer"], torch.optim.Adam)
    assert config["optimizer"].param_groups[0]["lr"] == 1e-4
    assert config["lr_scheduler"]["scheduler"].factor == 0.5


def test_checkpoint_of_a_lambda_optimizer_needs_it_again(tmp_path):
    module = BinaryClassifier(small_net(), lambda params: torch.optim.SGD(params, lr=0.1))
    fit = trainer(max_epochs=1)
    fit.fit(module, train_dataloaders=make_batches(1), val_dataloaders=make_batches(1, seed=1))
    path = tmp_path / "model.ckpt"
    fit.save_checkpoint(path)
    with pytest.raises(ConfigError, match="optimizer is missing"):
        BinaryClassifier.load_from_checkpoint(path, net=small_net())
    reloaded = BinaryClassifier.load_from_checkpoint(path, net=small_net(), optimizer=ADAM)
    assert torch.equal(reloaded.net.head[0].weight, module.net.head[0].weight)
