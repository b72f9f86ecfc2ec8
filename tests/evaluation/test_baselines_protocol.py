"""Every baseline follows the Baseline protocol the evaluation relies on, and builds from a config."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from calolab.errors import ConfigError
from calolab.evaluation.baselines import (
    BDT,
    SHOWER_SHAPES,
    Baseline,
    CutBasedTight,
    MassWindowCut,
    ShowerShapeBDT,
    Variable,
)

# The baselines lists proposed for conf/evaluation/ (the lead's files): they must build as written.
PROPOSED = {
    "photon_id": """
baselines:
  - _target_: calolab.evaluation.baselines.CutBasedTight
  - _target_: calolab.evaluation.baselines.ShowerShapeBDT
""",
    "wtag": r"""
baselines:
  - _target_: calolab.evaluation.baselines.Variable
    variable: jet_tau21
    direction: lower
    name: tau21
    label: "$\\tau_{21}$"
  - _target_: calolab.evaluation.baselines.MassWindowCut
    mass_variable: jet_m
    window: [65000.0, 105000.0]
    then_variable: jet_tau21
    direction: lower
    target_efficiency: 0.5
    name: mass_tau21
    label: "Mass window + $\\tau_{21}$"
  - _target_: calolab.evaluation.baselines.BDT
    variables: [jet_m, jet_tau21, jet_pt, jet_eta, jet_nconst]
    absolute: [jet_eta]
    name: bdt
    label: Jet-variable BDT
""",
    "qg": """
baselines:
  - _target_: calolab.evaluation.baselines.Variable
    variable: jet_nconst
    direction: lower
    name: multiplicity
    label: Constituent multiplicity
  - _target_: calolab.evaluation.baselines.Variable
    variable: jet_m
    direction: lower
    name: mass
    label: Jet mass
  - _target_: calolab.evaluation.baselines.BDT
    variables: [jet_nconst, jet_m, jet_pt]
    name: bdt
    label: q/g BDT
""",
}


def toy(n: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Every variable any baseline here reads, each carrying some separation."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(np.int64)
    s = np.where(y == 1, 1.0, -1.0)
    aux = {v: 0.5 * s * (-1) ** i + rng.normal(size=n) for i, v in enumerate(SHOWER_SHAPES)}
    aux |= {
        "ph_pt": rng.uniform(2e4, 1e5, n),
        "ph_eta": rng.uniform(-1.4, 1.4, n),
        "jet_m": np.where(y == 1, rng.normal(80e3, 8e3, n), rng.uniform(20e3, 300e3, n)),
        "jet_tau21": np.clip(0.5 - 0.15 * s + 0.15 * rng.normal(size=n), 0.0, 1.0),
        "jet_pt": rng.uniform(250e3, 300e3, n),
        "jet_eta": rng.uniform(-2.0, 2.0, n),
        "jet_nconst": rng.poisson(np.where(y == 1, 25, 40)).astype(np.float64),
    }
    return aux, y, rng.uniform(0.5, 1.5, n)


BUILDERS = {
    "CutBasedTight": lambda: CutBasedTight(),
    "ShowerShapeBDT": lambda: ShowerShapeBDT(kinematics=True, max_iter=20),
    "BDT": lambda: BDT(("jet_m", "jet_tau21", "jet_nconst"), max_iter=20),
    "Variable": lambda: Variable("jet_tau21", "lower"),
    "MassWindowCut": lambda: MassWindowCut(),
}
# (has a score, has a working point)
KINDS = {
    "CutBasedTight": (False, True),
    "ShowerShapeBDT": (True, False),
    "BDT": (True, False),
    "Variable": (True, False),
    "MassWindowCut": (True, True),
}


@pytest.mark.parametrize("kind", BUILDERS)
def test_every_baseline_follows_the_protocol(kind):
    train, y_train, w_train = toy(2000, seed=0)
    test, _, _ = toy(700, seed=1)
    base = BUILDERS[kind]()
    assert isinstance(base, Baseline)
    assert isinstance(base.name, str) and isinstance(base.label, str) and base.label
    assert isinstance(base.variables, tuple) and all(v in train for v in base.variables)
    only = {v: train[v] for v in base.variables}  # the declared variables are all it reads
    assert base.fit(only, y_train, w_train) is base
    has_score, has_wp = KINDS[kind]
    score, passes = base.score(test), base.passes(test)
    if has_score:
        assert score.shape == (700,) and score.dtype == np.float64
    else:
        assert score is None
    if has_wp:
        assert passes.shape == (700,) and passes.dtype == bool and 0 < passes.sum() < 700
    else:
        assert passes is None
    json.dumps(base.describe(), allow_nan=False)
    assert base.describe()["variables"] == list(base.variables)


@pytest.mark.parametrize("kind", BUILDERS)
def test_the_fit_is_the_training_split_and_nothing_else(kind):
    """Scoring test events leaves the fit alone; the training labels drive it (shuffled labels change it)."""
    train, y_train, w_train = toy(2000, seed=2)
    test, _, _ = toy(700, seed=3)
    base = BUILDERS[kind]().fit(train, y_train, w_train)
    before = json.dumps(base.describe())
    out = (base.score(test), base.passes(test))
    assert json.dumps(base.describe()) == before
    again = BUILDERS[kind]().fit(train, y_train, w_train)
    for a, b in zip(out, (again.score(test), again.passes(test))):
        if a is not None:
            np.testing.assert_array_equal(a, b)  # deterministic
    shuffled = np.random.default_rng(4).permutation(y_train)
    assert json.dumps(BUILDERS[kind]().fit(train, shuffled, w_train).describe()) != before


def test_photon_baselines_keep_their_metric_names_and_defaults():
    cut, bdt = CutBasedTight(), ShowerShapeBDT()
    assert (cut.name, cut.label, cut.variables) == ("baseline", "Cut-based tight-like", SHOWER_SHAPES)
    assert (bdt.name, bdt.label, bdt.variables) == ("bdt", "Shower-shape BDT", SHOWER_SHAPES)
    assert (cut.target_efficiency, cut.step) == (0.85, 0.01)
    assert isinstance(bdt, BDT) and bdt.model.max_iter == 200 and bdt.model.learning_rate == 0.1
    assert ShowerShapeBDT(kinematics=True).variables == (*SHOWER_SHAPES, "ph_pt", "ph_eta")
    assert ShowerShapeBDT(kinematics=True).absolute == ("ph_eta",)
    assert CutBasedTight(variables=("Rhad", "Reta")).variables == ("Rhad", "Reta")


def test_baseline_is_abstract_and_needs_a_fit():
    with pytest.raises(TypeError):
        Baseline(("x",), name="x", label="x")

    class NoFit(Baseline):
        pass

    with pytest.raises(TypeError, match="fit"):
        NoFit(("x",), name="x", label="x")


@pytest.mark.parametrize("kind", BUILDERS)
@pytest.mark.parametrize(("kwargs", "match"), [({"name": "bdt auc"}, "metric prefix"), ({"label": ""}, "label")])
def test_names_and_labels_are_checked(kind, kwargs, match):
    cls = type(BUILDERS[kind]())
    args = {"variable": "jet_tau21"} if cls is Variable else {"variables": ("jet_m",)} if cls is BDT else {}
    with pytest.raises(ConfigError, match=match):
        cls(**args, **kwargs)


@pytest.mark.parametrize("experiment", PROPOSED)
def test_proposed_evaluation_configs_build_and_name_only_constructor_args(experiment):
    cfg = OmegaConf.create(PROPOSED[experiment])
    for entry in cfg.baselines:
        params = inspect.signature(get_class(entry._target_).__init__).parameters
        assert set(entry) - {"_target_"} <= set(params) - {"self"}
    baselines = [instantiate(entry, _convert_="all") for entry in cfg.baselines]
    assert all(isinstance(b, Baseline) for b in baselines)
    assert len({b.name for b in baselines}) == len(baselines)
    train, y, w = toy(1500, seed=5)
    for b in baselines:
        b.fit(train, y, w)
        assert b.score(train) is not None or b.passes(train) is not None
