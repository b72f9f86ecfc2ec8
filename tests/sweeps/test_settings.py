"""Sweep settings fail before any trial: search spaces, samplers, pruners, storages; and the
tell / stale-trial rules that need no training (NaN results, a dead worker's RUNNING trial)."""

from __future__ import annotations

import math
import subprocess

import optuna
import pytest
from optuna.trial import TrialState

from calolab.app import compose_config
from calolab.errors import ConfigError
from sweeps.errors import SweepError
from sweeps.loop import WORKER_ATTR, SweepSettings, open_study, recover_stale_trials, tell
from sweeps.pruners import make_pruner
from sweeps.samplers import make_sampler
from sweeps.space import fixed_overrides, override, parse_space
from sweeps.storage import open_storage, redact


@pytest.fixture(scope="module")
def cfg():
    return compose_config("train", ["experiment=photon_id", "sweep=photon_id"])


def test_preset_space_parses_against_the_config(cfg):
    space = parse_space(
        {
            "model.optimizer.lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
            "data.batch_size": [32, 64],
            "net.dropout": {"type": "float", "low": 0.0, "high": 0.3, "step": 0.1},
            "trainer.max_epochs": {"type": "int", "low": 1, "high": 4},
        },
        cfg,
    )
    assert isinstance(space["model.optimizer.lr"], optuna.distributions.FloatDistribution)
    assert space["model.optimizer.lr"].log
    assert space["data.batch_size"].choices == (32, 64)
    assert isinstance(space["trainer.max_epochs"], optuna.distributions.IntDistribution)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"model.optimizer.lrr": {"type": "float", "low": 1e-5, "high": 1e-2}},
            "unknown parameter path 'model.optimizer.lrr'",
        ),
        ({"model.optimizer.lr": {"type": "float", "low": 1e-2, "high": 1e-5}}, "inverted range"),
        ({"model.optimizer.lr": {"type": "float", "low": 1e-2, "high": 1e-2}}, "empty range"),
        ({"model.optimizer.lr": {"type": "float", "low": 0, "high": 1e-2, "log": True}}, "log range must be positive"),
        ({"data.batch_size": {"type": "categorical", "choices": []}}, "non-empty"),
        ({"data.batch_size": {"type": "integer", "low": 1, "high": 2}}, "type must be one of"),
        ({"data.batch_size": {"type": "int", "low": 1}}, "'high' is required"),
        ({}, "params is empty"),
    ],
)
def test_bad_search_space_is_a_clear_error(cfg, params, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_space(params, cfg)


def test_sweep_grammar_in_params_and_on_the_command_line(cfg):
    params = {
        "model.optimizer.lr": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
        "net.dropout": "interval(0, 0.3)",
        "data.batch_size": "choice(32, 64)",
    }
    arguments = [
        "model.optimizer.lr=tag(log, interval(1e-4, 1e-2))",  # replaces the preset's range
        "trainer.max_epochs=range(2, 6)",  # adds a dimension: 2..5, as Hydra's range
        "net.dense=[64],[256,64]",
        "net.dropout=0.1",  # fixed: no longer searched
        "debug=smoke",
    ]
    space = parse_space(params, cfg, arguments)
    assert space == {
        "model.optimizer.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
        "data.batch_size": optuna.distributions.CategoricalDistribution([32, 64]),
        "trainer.max_epochs": optuna.distributions.IntDistribution(2, 5),
        "net.dense": optuna.distributions.CategoricalDistribution(["[64]", "[256,64]"]),
    }
    assert fixed_overrides(arguments) == ["net.dropout=0.1", "debug=smoke"]
    assert parse_space({"x": "range(0.1, 0.5, 0.1)"})["x"].step == pytest.approx(0.1)


def test_conditional_dimensions(cfg):
    """`when` samples a dimension only where an earlier categorical took the named value(s); `+`
    adds a key the config lacks."""
    sgd = {"model.optimizer._target_": "torch.optim.SGD"}
    space = parse_space(
        {
            "model.optimizer._target_": ["torch.optim.Adam", "torch.optim.SGD"],
            "+model.optimizer.momentum": {"type": "float", "low": 0.5, "high": 0.99, "when": sgd},
        },
        cfg,
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        params = space.sample(trial)
        optimizer = params["model.optimizer._target_"]
        seen.add(optimizer)
        assert ("model.optimizer.momentum" in params) == (optimizer == "torch.optim.SGD")
        overrides = space.overrides(params)
        assert overrides[0] == f"model.optimizer._target_='{optimizer}'"
        if optimizer == "torch.optim.SGD":
            assert overrides[1].startswith("+model.optimizer.momentum=")
        study.tell(trial, 0.5)
    assert seen == {"torch.optim.Adam", "torch.optim.SGD"}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"+model.optimizer.momentum": {"type": "float", "low": 0.5, "high": 0.9, "when": {"net.dense": "[64]"}}},
            "when names 'net.dense', which must be a categorical dimension listed before it",
        ),
        (
            {
                "model.optimizer._target_": ["torch.optim.Adam"],
                "+model.optimizer.momentum": {
                    "type": "float",
                    "low": 0.5,
                    "high": 0.9,
                    "when": {"model.optimizer._target_": "torch.optim.SDG"},
                },
            },
            "when model.optimizer._target_='torch.optim.SDG' is not one of its choices",
        ),
        ({"+model.optimizer.lr": [1e-3]}, "the config already has 'model.optimizer.lr'"),
        ({"+model.optimiser.momentum": [0.9]}, "unknown parameter path 'model.optimiser'"),
    ],
)
def test_bad_conditional_dimensions(cfg, params, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_space(params, cfg)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"x": "interval(3, 1)"}, "inverted range"),
        ({"x": "range(1, 2)"}, "needs at least two values"),
        ({"x": "5"}, "expected a search dimension"),
        ({"x": "choice(1,"}, "cannot parse"),
    ],
)
def test_bad_sweep_grammar(params, message):
    with pytest.raises(ConfigError, match=message):
        parse_space(params)


def test_unknown_sampler_and_pruner():
    with pytest.raises(ConfigError, match="unknown sampler 'tpee'; did you mean 'tpe'"):
        make_sampler("tpee")
    with pytest.raises(ConfigError, match="unknown pruner 'medain'"):
        make_pruner("medain")
    with pytest.raises(ConfigError, match="one objective"):
        make_sampler("cmaes", n_objectives=2)
    assert isinstance(make_sampler("NSGA-II", seed=1), optuna.samplers.NSGAIISampler)
    assert isinstance(make_sampler("gp", seed=1), optuna.samplers.GPSampler)
    assert isinstance(make_pruner("hyperband"), optuna.pruners.HyperbandPruner)
    median = make_pruner("median", options={"median": {"n_warmup_steps": 2}, "hyperband": {"min_resource": 1}})
    assert median._n_warmup_steps == 2
    with pytest.raises(ConfigError, match="pruner_options for 'median'"):
        make_pruner("median", options={"median": {"warmup": 2}})
    assert isinstance(make_pruner(None), optuna.pruners.NopPruner)


def test_unreachable_storage_is_a_clear_error_without_the_password():
    with pytest.raises(ConfigError, match="cannot open") as info:
        open_storage("postgresql://postgres:secret@127.0.0.1:1/nowhere")
    assert "secret" not in str(info.value) and "***" in str(info.value)
    assert redact("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"


def test_study_settings_checked_before_trials(cfg, tmp_path):
    settings = SweepSettings(params={"model.optimizer.lr": [1e-3]}, storage=str(tmp_path / "s.journal"))
    study, _, metrics, _ = open_study(settings, cfg)
    assert metrics == ["val/auc"] and study.direction == optuna.study.StudyDirection.MAXIMIZE
    with pytest.raises(ConfigError, match="one direction per metric"):
        SweepSettings(metric=["val/auc", "model/n_params"], direction=["maximize"] * 3).objectives()
    with pytest.raises(ConfigError, match="cannot prune"):
        open_study(SweepSettings(metric=["val/auc", "val/loss"], params={"model.optimizer.lr": [1e-3]}), cfg)
    with pytest.raises(ConfigError, match="max_failure_rate must be between 0 and 1"):
        SweepSettings(max_failure_rate=1.5).check()
    with pytest.raises(ConfigError, match="grace_period must exceed heartbeat_interval"):
        SweepSettings(heartbeat_interval=10, grace_period=5).check()
    with pytest.raises(ConfigError, match="heartbeat_interval must be a positive number of seconds"):
        SweepSettings(heartbeat_interval=0).check()


def test_changed_categorical_choices_need_a_new_study(cfg, tmp_path):
    storage = str(tmp_path / "s.journal")
    first = SweepSettings(study_name="s", storage=storage, params={"net.dense": ["[64]", "[256,64]"]})
    study, _, _, space = open_study(first, cfg)
    study.tell(study.ask(space), 0.9)
    moved = SweepSettings(
        study_name="s", storage=storage, params={"net.dense": ["[64]", "[256,64]"], "net.dropout": [0.1]}
    )
    open_study(moved, cfg)  # a new dimension is fine
    changed = SweepSettings(study_name="s", storage=storage, params={"net.dense": ["[64]", "[1024,128]"]})
    with pytest.raises(SweepError, match="searched net.dense as CategoricalDistribution.*hydra.sweeper.study_name"):
        open_study(changed, cfg)


def test_overrides_keep_types():
    assert override("model.optimizer.lr", 0.001) == "model.optimizer.lr=0.001"
    assert override("net.dense", "[64]") == "net.dense=[64]"
    assert override("net.activation", "selu") == "net.activation='selu'"
    assert override("net.pool", True) == "net.pool=true"


class _Ret:
    def __init__(self, value=None, error=None):
        self.value, self.error = value, error

    @property
    def return_value(self):
        if self.error is not None:
            raise self.error
        return self.value


@pytest.mark.parametrize("value", [math.nan, math.inf, None, [0.5]])
def test_non_finite_result_is_fail_with_reason(value):
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    frozen = tell(study, trial, _Ret(value), 1 if not isinstance(value, list) else 2)
    assert frozen.state == TrialState.FAIL
    assert "finite" in study.trials[0].user_attrs["fail_reason"]


def test_raised_and_pruned_results():
    study = optuna.create_study(direction="maximize")
    assert tell(study, study.ask(), _Ret(error=RuntimeError("boom")), 1).state == TrialState.FAIL
    assert study.trials[0].user_attrs["fail_reason"] == "RuntimeError: boom"
    assert tell(study, study.ask(), _Ret(error=optuna.TrialPruned()), 1).state == TrialState.PRUNED
    assert tell(study, study.ask(), _Ret(0.7), 1).state == TrialState.COMPLETE


def test_dead_workers_running_trial_is_failed_and_retried(tmp_path):
    """Journal storage has no heartbeat: a RUNNING trial whose worker process is gone (same host)
    is failed and queued again with the same parameters; a live worker's trial is left alone."""
    import os
    import socket

    storage = open_storage(str(tmp_path / "s.journal"))
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    dead, alive = study.ask(dist), study.ask(dist)
    proc = subprocess.Popen(["true"])
    proc.wait()
    dead.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{proc.pid}")
    alive.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")
    failed = recover_stale_trials(study)
    assert [t.number for t in failed] == [dead.number]
    assert failed[0].user_attrs["fail_reason"] == f"worker {socket.gethostname()}:{proc.pid} died: its process is gone"
    assert recover_stale_trials(study) == []  # once only
    states = {t.number: t.state for t in study.get_trials()}
    assert states[dead.number] == TrialState.FAIL and states[alive.number] == TrialState.RUNNING
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1
    retry = study.ask(dist)
    assert retry.params["x"] == dead.params["x"]
    assert study._storage.get_trial(retry._trial_id).system_attrs["failed_trial"] == dead.number
