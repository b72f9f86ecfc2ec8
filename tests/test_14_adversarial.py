"""Issue 14: adversarially decorrelated taggers (pileup-robust and mass-decorrelated W tagging).

- the 1/JSD figure of merit against a hand computation on known histograms (one implementation,
  shared by the evaluation, the task and the registry gate);
- the mixture density adversary's loss against the closed-form Gaussian negative log-likelihood;
- each preset (``adversarial_pileup``, ``adversarial_mass``) end to end in smoke mode on small jet
  ntuples written here (both pileup conditions composed from two folders, as the preset does):
  MLflow run in its own experiment, per-epoch ``val/inv_jsd50`` and ``val/adv_loss``,
  ``test/inv_jsd50``, the pass/fail plot, an ONNX model holding the classifier only; one of them
  promoted through its registry config (decorrelation floor);
- on a small seeded sample, adversarial training raises 1/JSD of the background mass well above
  the lambda = 0 tagger's (a test that fails if the adversary does nothing);
- bad input: lambda < 0, an adversary target that is no aux variable, a decorrelation variable
  missing from the aux variables: one clear error each.
"""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import numpy as np
import onnx
import pytest
import pytorch_lightning as pl
import torch
from mlflow.tracking import MlflowClient

from calolab.app import compose_config
from calolab.errors import ConfigError
from calolab.evaluation import ClassifierEvaluation
from calolab.evaluation.decorrelation import bootstrap_inverse_jsd, inverse_jsd
from calolab.evaluation.metrics import auc, jsd
from calolab.pipeline.train import build_task, train
from lightning_modules import AdversarialClassifier
from lightning_modules.nets import MixtureDensityAdversary
from lightning_modules.nets.adversary import gaussian_mixture_nll
from tests.datamodules import write_tree
from tests.datamodules.jet_samples import make_jet_dm

#: jets per file of the smoke samples (one file per pileup condition)
JETS = 240


def sculpting_jets(n: int, first: int, seed: int, mu: float = 0.0) -> dict:
    """``n`` jets (the generator's ``jets`` branches) whose background mass follows what tags them.

    Signal jets have many constituents (18-30), background jets 5-30, and the background's
    ``jet_m`` grows with its number of constituents (3 GeV each, 5 GeV spread), so a tagger that
    counts constituents passes heavy background and fails light background: it sculpts the mass,
    as a real W tagger does. Signal constituents are also more often charged (75% vs 45%), a
    feature independent of the mass that a decorrelated tagger can keep using. Signal masses are
    a W-like peak (80 +- 10 GeV).
    """
    rng = np.random.default_rng(seed)
    label = (rng.random(n) < 0.5).astype(np.int32)
    counts = np.where(label == 1, rng.integers(18, 31, n), rng.integers(5, 31, n))
    jet = np.repeat(np.arange(n), counts)
    axis_eta, axis_phi = rng.uniform(-1.5, 1.5, n), rng.uniform(-3.0, 3.0, n)
    eta = axis_eta[jet] + rng.normal(0, 0.1, jet.size)
    phi = axis_phi[jet] + rng.normal(0, 0.1, jet.size)
    pt = rng.exponential(10e3, jet.size) + 500.0
    charged = rng.random(jet.size) < np.where(label[jet] == 1, 0.75, 0.45)
    charge = np.where(charged, rng.choice([-1.0, 1.0], jet.size), 0.0)
    mass = np.where(label == 1, rng.normal(80e3, 10e3, n), 3e3 * counts + rng.normal(0, 5e3, n))
    const = ak.zip(
        {
            "pt": ak.unflatten(pt.astype(np.float32), counts),
            "eta": ak.unflatten(eta.astype(np.float32), counts),
            "phi": ak.unflatten(phi.astype(np.float32), counts),
            "charge": ak.unflatten(charge.astype(np.float32), counts),
            "is_pileup": ak.unflatten(np.zeros(jet.size, bool), counts),
        }
    )
    return {
        "jet_pt": np.bincount(jet, pt, n).astype(np.float32),
        "jet_eta": axis_eta.astype(np.float32),
        "jet_phi": axis_phi.astype(np.float32),
        "jet_m": np.clip(mass, 1e3, None).astype(np.float32),
        "jet_tau21": rng.uniform(0.1, 0.9, n).astype(np.float32),
        "jet_nconst": counts.astype(np.int32),
        "truth_label": label,
        "mu": np.full(n, mu, np.float32),
        "event_number": np.arange(first, first + n, dtype=np.int64),
        "const": const,
    }


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """Two jet folders (mu = 0 and mu = 50), an MLflow store and a data folder for the presets."""
    root = tmp_path_factory.mktemp("adv")
    for mu, folder, seed in ((0.0, "wjets", 1), (50.0, "wjets-mu50", 2)):
        (root / "data" / folder).mkdir(parents=True)
        write_tree(root / "data" / folder / "jets_0.root", sculpting_jets(JETS, 0, seed, mu), "jets")
    return root


def preset_overrides(preset: str, root: Path, *extra: str) -> list[str]:
    return [
        f"experiment={preset}",
        "debug=smoke",
        f"paths.data_dir={root / 'data'}",
        f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
        "generate=null",  # the ntuples are written above; the preset's data.files read them
        *(
            [f"data.files=[{root / 'data' / 'wjets'}/*.root,{root / 'data' / 'wjets-mu50'}/*.root]"]
            if preset == "adversarial_pileup"
            else [f"data.files=[{root / 'data' / 'wjets'}/*.root]"]
        ),
        # every phase in 3 epochs of a few batches: classifier, adversary, adversarial
        "model.pretrain_epochs=1",
        "model.adversary_pretrain_epochs=1",
        "model.adversary_steps=2",
        "trainer.max_epochs=3",
        "evaluation.bootstrap_replicas=50",
        "evaluation.correlation_maps=false",
        "evaluation.average_images=false",
        *extra,
    ]


# -- the figure of merit ----------------------------------------------------------------------
def test_jsd_matches_a_hand_computation():
    # P = (1/2, 1/2, 0, 0), Q = (0, 1/2, 1/2, 0), M = (1/4, 1/2, 1/4, 0):
    # KL(P||M) = 1/2 log2(2) + 1/2 log2(1) = 1/2 = KL(Q||M), JSD = 1/2, 1/JSD = 2
    assert jsd(np.array([2.0, 2, 0, 0]), np.array([0.0, 1, 1, 0])) == pytest.approx(0.5, abs=1e-12)
    # P = (3/4, 1/4), Q = (1/4, 3/4): JSD = 1 - H(3/4) with the binary entropy H(3/4) in bits
    h = -(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25))
    assert jsd(np.array([3.0, 1]), np.array([1.0, 3])) == pytest.approx(1 - h, abs=1e-12)

    # the same histograms through the tagger's cut: the 50% signal-efficiency cut is score >= 0.6;
    # four background jets pass it (values 0.5, 0.5, 1.5, 1.5), two fail it (values 1.5, 2.5)
    label = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    score = np.array([0.9, 0.6, 0.2, 0.1, 0.95, 0.8, 0.7, 0.65, 0.3, 0.1])
    values = np.array([9, 9, 9, 9, 0.5, 0.5, 1.5, 1.5, 1.5, 2.5])
    weight = np.ones(10)
    edges = [0.0, 1.0, 2.0, 3.0, 4.0]
    assert inverse_jsd(label, score, weight, values, 0.5, edges) == pytest.approx(2.0, rel=1e-12)
    assert inverse_jsd(label, score, weight, values, 0.5, {"start": 0, "stop": 4, "step": 1}) == pytest.approx(2.0)
    # a variable the cut does not touch: identical shapes, 1/JSD = inf
    assert inverse_jsd(label, score, weight, np.zeros(10), 0.5, 4) == float("inf")
    # the bootstrap replicas scatter around the value on a larger sample
    rng = np.random.default_rng(0)
    n = 4000
    y = rng.random(n) < 0.5
    m = rng.normal(80, 20, n)
    s = rng.normal(0, 1, n) + y + 0.02 * (m - 80) * ~y  # sculpts: heavier background scores higher
    value = inverse_jsd(y, s, np.ones(n), m, 0.5, {"start": 0, "stop": 160, "step": 10})
    reps = bootstrap_inverse_jsd(y, s, np.ones(n), m, 0.5, {"start": 0, "stop": 160, "step": 10}, replicas=200)
    assert reps.shape == (200,) and np.all(np.isfinite(reps))
    assert abs(np.median(reps) - value) < 3 * np.std(reps) and np.std(reps) > 0


def test_mdn_loss_is_the_gaussian_nll():
    rng = np.random.default_rng(0)
    y, mu, log_sigma = (torch.tensor(rng.normal(size=64)) for _ in range(3))
    closed = (y - mu) ** 2 / (2 * torch.exp(2 * log_sigma)) + log_sigma + 0.5 * np.log(2 * np.pi)
    one = gaussian_mixture_nll(torch.zeros(64, 1, dtype=torch.float64), mu[:, None], log_sigma[:, None], y)
    torch.testing.assert_close(one, closed)
    # two identical components with any weights are the same Gaussian
    two = gaussian_mixture_nll(
        torch.tensor([[0.3, -1.2]] * 64, dtype=torch.float64),
        mu[:, None].repeat(1, 2),
        log_sigma[:, None].repeat(1, 2),
        y,
    )
    torch.testing.assert_close(two, closed)
    # a 50/50 mixture of N(-1, 1) and N(1, 1) at y = 0: -log(N(0; 1, 1)) exactly
    mix = gaussian_mixture_nll(torch.zeros(1, 2), torch.tensor([[-1.0, 1.0]]), torch.zeros(1, 2), torch.zeros(1))
    assert mix.item() == pytest.approx(0.5 + 0.5 * np.log(2 * np.pi), rel=1e-6)
    # the net's nll is that function of its own outputs
    net = MixtureDensityAdversary(n_inputs=2, components=3, hidden=[8])
    x, t = torch.randn(5, 2), torch.randn(5)
    torch.testing.assert_close(net.nll(x, t), gaussian_mixture_nll(*net(x), t))


# -- bad input ----------------------------------------------------------------------------------
def test_negative_lambda_is_one_clear_error():
    cfg = compose_config("train", ["experiment=adversarial_mass", "model.lam=-1"])
    net = MixtureDensityAdversary(n_inputs=1)  # any module: lambda is refused before the net is looked at
    with pytest.raises(Exception) as info:  # Hydra wraps it; `calolab train` prints the ConfigError alone
        build_task(cfg, type("DM", (), {"input_shapes": {"image": (1, 25, 25)}})())
    err = info.value.__cause__
    assert isinstance(err, ConfigError) and str(err).endswith("but got lam=-1"), info.value
    with pytest.raises(ConfigError, match=r"model.lam must be >= 0"):
        AdversarialClassifier(
            net=net,
            optimizer=torch.optim.Adam,
            adversary=MixtureDensityAdversary,
            adversary_optimizer=torch.optim.Adam,
            lam=-0.5,
            target="jet_m",
        )


def test_missing_adversary_target_and_decorrelation_variable(samples, tmp_path):
    dm = make_jet_dm(
        tmp_path, files=str(samples / "data" / "wjets" / "*.root"), aux=["jet_pt", "jet_m", "mu"], batch_size=64
    )
    dm.prepare_data()
    dm.setup("fit")
    cfg = compose_config("train", ["experiment=adversarial_mass", "model.target=jet_mass", "net=wtag_maxout"])
    task = build_task(cfg, dm)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(
        ConfigError, match=r"adversary target model.target='jet_mass' .*did you mean 'jet_m'.*jet_pt, jet_m, mu"
    ):
        trainer.fit(task, datamodule=dm)
    # the decorrelation variable of the per-epoch val/inv_jsd50
    cfg = compose_config(
        "train", ["experiment=adversarial_mass", "model.decorrelation.variable=m_jet", "net=wtag_maxout"]
    )
    with pytest.raises(
        ConfigError, match=r"decorrelation variable model.decorrelation.variable='m_jet' .*aux variables"
    ):
        build_task(cfg, dm).check_variables([*dm.aux, "event_number"])
    # and the evaluation's (test/inv_jsd50)
    evaluation = ClassifierEvaluation(decorrelation={"mass": {"variable": "jet_mass", "scale": 0.001}})
    split = {"label": np.array([0, 1]), "weight": np.ones(2), "aux": {"jet_m": np.ones(2), "mu": np.zeros(2)}}
    with pytest.raises(ConfigError, match=r"decorrelation variable 'jet_mass' .*aux branches: jet_m, mu"):
        evaluation.evaluate(score=np.array([0.2, 0.8]), test=split, train=split, out_dir=tmp_path / "ev")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: tiny nets on a shared CPU run ~10x faster than with contended threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- the presets end to end ---------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("preset", ["adversarial_pileup", "adversarial_mass"])
def test_preset_smoke_run(preset, samples, tmp_path):
    from calolab.registry import GatePolicy, promote
    from calolab.tracking import TrackingStore

    cfg = compose_config("train", preset_overrides(preset, samples, f"tracking.log_models={preset.endswith('pileup')}"))
    result = train(cfg)
    client = MlflowClient(tracking_uri=f"sqlite:///{samples / 'mlflow.db'}")
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == preset
    assert run.data.tags["calolab.task"] == "adversarial_classifier"
    # the trade-off per epoch: one val/inv_jsd50 and adversary loss per validation (epochs 2 and 3
    # train the adversary), R50 and 1/JSD of the evaluated model
    history = {
        k: client.get_metric_history(run.info.run_id, k) for k in ("val/inv_jsd50", "val/adv_loss", "train/adv_loss")
    }
    assert len(history["val/inv_jsd50"]) == 3 and len(history["train/adv_loss"]) == 2
    assert all(np.isfinite(m.value) for m in history["val/adv_loss"])
    m = run.data.metrics
    assert m["test/rej50"] >= 1 and m["test/inv_jsd50"] > 0 and m["test/inv_jsd50_err"] >= 0
    variable = "mu" if preset == "adversarial_pileup" else "mass"
    assert m[f"test/inv_jsd50_{variable}"] == m["test/inv_jsd50"]
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert f"plots/decorrelation_{variable}.png" in plots
    tables = json.loads(
        Path(client.download_artifacts(run.info.run_id, "evaluation/tables.json", str(tmp_path))).read_text()
    )
    deco = tables["decorrelation"][variable]
    assert sum(deco["passing"]) > 0 and sum(deco["failing"]) > 0
    if preset == "adversarial_mass":
        return
    # both pileup conditions in one dataset: the efficiency in mu has two bins
    assert "eff_vs_mu" not in tables["skipped"]
    # ONNX holds the classifier only: one input (the image), one output, no adversary weights
    path = client.download_artifacts(run.info.run_id, "onnx/model.onnx", str(tmp_path))
    model = onnx.load(path)
    assert [i.name for i in model.graph.input] == ["image"] and len(model.graph.output) == 1
    assert not any("adversary" in init.name for init in model.graph.initializer)
    # promotable with its registry config; a floor the tagger misses refuses it (alias unmoved)
    registry = compose_config(
        "promote", ["registry=adversarial_pileup", "registry.decorrelation.min_inverse_jsd=1e9"]
    ).registry
    store = TrackingStore.resolve(f"sqlite:///{samples / 'mlflow.db'}", str(samples / "mlruns"))
    decision, _, _ = promote(
        store, preset, GatePolicy.from_config(registry), run_id=result["run_id"], registered_model=preset
    )
    assert not decision.promoted
    gates = {g.name: g for g in decision.gates}
    assert gates["decorrelation"].status == "fail" and "1/JSD of background mu" in gates["decorrelation"].detail
    # the gate measured what the evaluation logged: the run's test/inv_jsd50 on the same test events
    assert f"(test/inv_jsd50_mu) = {m['test/inv_jsd50']:.4g} <" in gates["decorrelation"].detail


# -- adversarial training decorrelates ---------------------------------------------------------
#: the decorrelation setting: a strong adversary (10 steps at lr 1e-2 per classifier step) and a
#: large lambda, so that 10 epochs of 2400 jets move 1/JSD (measured: 1.4-1.7 at lambda = 0,
#: 2.7-6.3 at lambda = 300 for seeds 0-2)
ADVERSARIAL = [
    "net=wtag_maxout",
    "net.maxout=[32]",
    "net.pieces=2",
    "net.dense=[16]",
    "model.pretrain_epochs=2",
    "model.adversary_pretrain_epochs=1",
    "model.adversary_steps=10",
    "model.adversary_optimizer.lr=1e-2",
    "model.adversary.components=3",
    "model.adversary.hidden=[32,32]",
    "model.decorrelation.bins=10",
]


def test_adversarial_training_raises_inverse_jsd(tmp_path):
    for k in range(4):
        write_tree(tmp_path / "data" / f"jets_{k}.root", sculpting_jets(600, k * 600, 10 + k), "jets")
    # the constituent counts (all and charged) as images: counting is the mass-sculpting feature
    dm = make_jet_dm(tmp_path, aux=["jet_pt", "jet_m", "mu"], channels=["count", "charged_count"], batch_size=64)
    dm.prepare_data()
    dm.setup("fit")
    figures = {}
    for lam in (0.0, 300.0):
        pl.seed_everything(0, verbose=False)
        task = build_task(
            compose_config("train", ["experiment=adversarial_mass", f"model.lam={lam}", *ADVERSARIAL]), dm
        )
        trainer = pl.Trainer(
            max_epochs=10,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        trainer.fit(task, datamodule=dm)
        # the held-out jets (val + test), scored by the classifier's predict (what evaluation uses)
        parts = [dm.arrays(split) for split in ("val", "test")]
        label = np.concatenate([np.asarray(a.label) for a in parts])
        weight = np.concatenate([np.asarray(a.weight) for a in parts])
        mass = np.concatenate([np.asarray(a.aux["jet_m"]) for a in parts]) * 1e-3
        score = np.concatenate([task.predict(a.inputs, dm.input_names)["score"] for a in parts])
        edges = np.quantile(mass[label == 0], np.linspace(0, 1, 11))  # ten equally populated mass bins
        figures[lam] = {
            "inv_jsd": inverse_jsd(label, score, weight, mass, 0.5, edges),
            "err": np.nanstd(bootstrap_inverse_jsd(label, score, weight, mass, 0.5, edges, replicas=200)),
            "auc": auc(label, score, weight),
            "val": float(trainer.callback_metrics["val/inv_jsd50"]),
        }
    plain, adversarial = figures[0.0], figures[300.0]
    # the lambda = 0 tagger sculpts (passing background is the heavy part), the adversarial one less so,
    # by more than both statistical errors together; and it still tags
    assert plain["inv_jsd"] < 2.5, figures
    assert adversarial["inv_jsd"] > 1.5 * plain["inv_jsd"], figures
    assert adversarial["inv_jsd"] - plain["inv_jsd"] > 2 * np.hypot(plain["err"], adversarial["err"]), figures
    assert adversarial["auc"] > 0.7, figures
    # the per-epoch val/inv_jsd50 of the last epoch says the same
    assert adversarial["val"] > plain["val"], figures


def test_lambda_scan_report_marks_lambda_zero():
    """The sweep's Pareto table lists the lambda = 0 trial (marked) even off the front; the plot circles it."""
    import warnings

    import optuna
    from optuna.visualization import matplotlib as ovm

    from sweeps.report import _mark_references, pareto_rows

    study = optuna.create_study(directions=["maximize", "maximize"])
    dist = {"model.lam": optuna.distributions.CategoricalDistribution([0.0, 1.0, 10.0, 100.0])}
    # (R50, 1/JSD) per lambda: lambda = 0 is dominated by lambda = 1 here, so off the front
    for lam, values in ((0.0, (20.0, 1.5)), (1.0, (21.0, 2.0)), (10.0, (15.0, 5.0)), (100.0, (8.0, 20.0))):
        study.add_trial(optuna.trial.create_trial(params={"model.lam": lam}, distributions=dist, values=list(values)))
    rows = pareto_rows(study, ["test/rej50", "test/inv_jsd50"])
    ref = [r for r in rows if r.get("reference")]
    assert [r["params"]["model.lam"] for r in ref] == [0.0] and ref[0]["pareto"] is False
    assert ref[0]["values"] == {"test/rej50": 20.0, "test/inv_jsd50": 1.5}
    assert {r["params"]["model.lam"] for r in rows if not r.get("reference")} == {1.0, 10.0, 100.0}
    with warnings.catch_warnings():  # optuna's matplotlib backend is marked experimental
        warnings.simplefilter("ignore")
        ax = _mark_references(study, ovm.plot_pareto_front(study, target_names=["test/rej50", "test/inv_jsd50"]))
    assert any("no adversary" in t.get_text() for t in ax.get_legend().get_texts())
    import matplotlib.pyplot as plt

    plt.close(ax.figure)  # optuna draws through pyplot; a figure left open leaks into later tests of the worker
