"""``calolab promote`` against a real local tracking store: first promotion, the same model refused,
a better one promoted with ``previous-champion`` kept, rollback, a parity-gate failure, concurrent
promotions in two processes, bad input; plus the gates, the policy, the selection and the lock."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest
from mlflow.tracking import MlflowClient

from calolab.app import CONF_DIR, compose_config
from calolab.errors import ConfigError
from calolab.evaluation.decorrelation import DecorrelationSpec
from calolab.pipeline.restore import restore_run
from calolab.pipeline.train import train
from calolab.registry import (
    EXIT_REFUSED,
    DigestMismatchError,
    GatePolicy,
    LockTimeoutError,
    RegistryError,
    promote,
    promotion_lock,
    roll_back,
)
from calolab.registry import gates as G
from calolab.registry.decision import Decision, apply_decision
from calolab.registry.lock import advisory_key, lock_file, lock_kind
from calolab.registry.promotion import download_onnx
from calolab.registry.scoring import frozen_test_set
from calolab.registry.selection import select_candidate
from calolab.tracking import TrackingStore
from tests.conftest import run_cli

SMOKE_EVENTS = 240
EXPERIMENT = "photon_id"
#: three trainings on one dataset (ranked by their test AUC in the fixture) and one on another split
TRAININGS = {
    "weak": ["trainer.max_epochs=1", "model.optimizer.lr=1e-5"],
    "one_epoch": ["trainer.max_epochs=1", "model.optimizer.lr=1e-4"],
    "two_epochs": ["trainer.max_epochs=2", "model.optimizer.lr=2e-4"],
    "other_split": ["trainer.max_epochs=1", "data.split_salt=1"],
}
QUIET = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Four smoke trainings in one SQLite store; ``worst < low < high`` share a dataset digest."""
    root = tmp_path_factory.mktemp("registry")
    data_dir, db = root / "data", root / "mlflow.db"
    uri = f"sqlite:///{db}"
    runs = {}
    for key, extra in TRAININGS.items():
        cfg = compose_config(
            "train",
            [
                f"experiment={EXPERIMENT}",
                "debug=smoke",
                f"paths.data_dir={data_dir}",
                f"tracking.uri={uri}",
                f"generate.n_events={SMOKE_EVENTS}",
                "generate.chunk_size=120",
                *extra,
            ],
        )
        runs[key] = train(cfg)["run_id"]
    client = MlflowClient(tracking_uri=uri)
    auc = {k: client.get_run(r).data.metrics["test/auc"] for k, r in runs.items()}
    worst, low, high = sorted(("weak", "one_epoch", "two_epochs"), key=auc.get)
    # the gates' outcomes below rely on these margins (training is seeded, so they do not vary)
    assert auc[low] - auc[worst] >= 0.01, auc
    assert auc[high] > auc[low], auc
    digests = {k: client.get_run(r).data.tags["dataset.digest"] for k, r in runs.items()}
    assert digests["weak"] == digests["one_epoch"] == digests["two_epochs"] != digests["other_split"]
    return SimpleNamespace(
        root=root,
        data_dir=data_dir,
        uri=uri,
        store=TrackingStore.resolve(uri, root),
        worst=runs[worst],
        low=runs[low],
        high=runs[high],
        other=runs["other_split"],
        auc={runs[k]: v for k, v in auc.items()},
    )


def policy(*overrides: str) -> GatePolicy:
    return GatePolicy.from_config(compose_config("promote", list(overrides)).registry)


def aliases(trained, name: str) -> dict[str, str]:
    model = MlflowClient(tracking_uri=trained.uri).get_registered_model(name)
    return {a: str(v) for a, v in model.aliases.items()}


def version_tags(trained, name: str, version: str) -> dict[str, str]:
    return MlflowClient(tracking_uri=trained.uri).get_model_version(name, version).tags


def n_versions(trained, name: str) -> int:
    return len(MlflowClient(tracking_uri=trained.uri).search_model_versions(f"name = '{name}'"))


def promote_cli(trained, *args: str, popen: bool = False):
    argv = ["promote", f"experiment={EXPERIMENT}", f"tracking.uri={trained.uri}", *args]
    if not popen:
        return run_cli(*argv, env=QUIET)
    exe = Path(sys.executable).with_name("calolab")
    env = {k: v for k, v in {**os.environ, **QUIET}.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.Popen([str(exe), *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def promote_api(trained, name: str, run_id: str, *overrides: str, **kwargs):
    decision, _, _ = promote(
        trained.store, EXPERIMENT, policy(*overrides), run_id=run_id, registered_model=name, **kwargs
    )
    return decision


# ---- end to end ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_first_promotion_then_the_same_model_is_refused(trained, tmp_path):
    """No champion: promoted if parity passes; the version carries its provenance; champion loads."""
    import mlflow

    res = promote_cli(trained, f"run_id={trained.worst}", "registered_model=first")
    assert res.returncode == 0, res.stderr
    assert "PROMOTED" in res.stdout and "parity" in res.stdout
    assert aliases(trained, "first") == {"champion": "1"}
    tags = version_tags(trained, "first", "1")
    assert tags["calolab.decision"] == "promoted"
    assert tags["calolab.source_run_id"] == trained.worst
    client = MlflowClient(tracking_uri=trained.uri)
    assert tags["calolab.dataset_digest"] == client.get_run(trained.worst).data.tags["dataset.digest"]
    assert tags["calolab.pytorch_model_uri"].startswith("models:/m-")
    assert tags["calolab.gate.parity"].startswith("pass: max |onnx - torch|")
    assert tags["calolab.gate.metric"].startswith("pass:") and "first promotion" in tags["calolab.gate.metric"]
    assert float(tags["calolab.candidate.test/auc"]) == pytest.approx(trained.auc[trained.worst], abs=1e-6)
    signature = json.loads(tags["calolab.signature"])
    assert [i["name"] for i in signature["inputs"]] == ["EMB1", "EMB2", "EMB3", "TileBar0"]
    assert signature["inputs"][1]["shape"] == [-1, 1, 7, 11]
    assert json.loads(tags["calolab.onnx.input_names"]) == ["EMB1", "EMB2", "EMB3", "TileBar0"]
    # the report run holds the markdown and the ROC overlay
    report = client.get_run(tags["calolab.report_run_id"])
    assert report.data.tags["calolab.kind"] == "promotion" and report.info.status == "FINISHED"
    files = {Path(a.path).name for a in client.list_artifacts(report.info.run_id, "promotion")}
    assert {"report.md", "roc_overlay.png", "decision.json"} <= files
    # models:/first@champion loads with mlflow.onnx, carries a signature, and runs in onnxruntime
    mlflow.set_tracking_uri(trained.uri)
    assert mlflow.models.get_model_info("models:/first@champion").signature is not None
    model = mlflow.onnx.load_model("models:/first@champion")
    path = tmp_path / "champion.onnx"
    path.write_bytes(model.SerializeToString())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: np.zeros((3, *i.shape[1:]), dtype=np.float32) for i in session.get_inputs()}
    (score,) = session.run(None, feeds)
    assert score.shape == (3,)

    # the same run again: no new version, refused as the champion, aliases untouched
    res = promote_cli(trained, f"run_id={trained.worst}", "registered_model=first")
    assert res.returncode == EXIT_REFUSED, res.stderr
    assert "not better than champion: it is the champion" in res.stdout
    assert aliases(trained, "first") == {"champion": "1"}
    assert n_versions(trained, "first") == 1
    assert version_tags(trained, "first", "1")["calolab.decision"] == "promoted"  # its own record is kept


@pytest.mark.slow
def test_better_model_promoted_previous_kept_then_rollback(trained):
    name = "better"
    assert promote_api(trained, name, trained.worst).promoted
    d = promote_api(trained, name, trained.high)
    assert d.promoted and d.version == "2" and d.champion_version == "1"
    assert aliases(trained, name) == {"champion": "2", "previous-champion": "1"}
    tags = version_tags(trained, name, "2")
    assert tags["calolab.replaced"] == "1" and tags["calolab.compared_with"] == "1"
    assert float(tags["calolab.champion.test/auc"]) == pytest.approx(trained.auc[trained.worst], abs=1e-6)
    assert float(tags["calolab.candidate.test/auc"]) == pytest.approx(trained.auc[trained.high], abs=1e-6)
    assert version_tags(trained, name, "1")["calolab.replaced_by"] == "2"

    # a worse candidate is refused and becomes the challenger; champion and previous stay
    d = promote_api(trained, name, trained.low)
    assert not d.promoted and [g.name for g in d.gates if not g.passed] == ["metric"]
    assert aliases(trained, name) == {"champion": "2", "previous-champion": "1", "challenger": "3"}
    assert version_tags(trained, name, "3")["calolab.gate.metric"].startswith("fail:")

    # rollback: champion <- previous-champion; v1 replaced nothing, so there is no earlier one
    res = promote_cli(trained, "rollback=true", f"registered_model={name}")
    assert res.returncode == 0, res.stderr
    assert "champion v2 -> v1" in res.stdout
    assert aliases(trained, name) == {"champion": "1", "challenger": "3"}
    assert "champion returned to v1" in version_tags(trained, name, "2")["calolab.rolled_back"]
    with pytest.raises(RegistryError, match="no previous-champion"):
        roll_back(trained.store, name, policy())
    assert aliases(trained, name) == {"champion": "1", "challenger": "3"}

    res = run_cli("registry", "list", f"name={name}", f"tracking.uri={trained.uri}")
    assert res.returncode == 0, res.stderr
    rows = {line.split()[1]: line for line in res.stdout.splitlines()[1:]}
    assert set(rows) == {"1", "2", "3"}
    assert "champion" in rows["1"] and "challenger" in rows["3"] and trained.high in rows["2"]
    assert f"{float(version_tags(trained, name, '2')['calolab.candidate.test/auc']):.4g}" in rows["2"]


@pytest.mark.slow
def test_rollback_walks_back_through_the_history(trained):
    name = "history"
    for run in (trained.worst, trained.low, trained.high):
        assert promote_api(trained, name, run).promoted
    assert aliases(trained, name) == {"champion": "3", "previous-champion": "2"}
    done = roll_back(trained.store, name, policy())
    assert (done.demoted, done.restored, done.previous_after) == ("3", "2", "1")
    assert aliases(trained, name) == {"champion": "2", "previous-champion": "1"}


@pytest.mark.slow
def test_a_gain_within_the_uncertainty_is_not_resolved(trained):
    """Issue 17: with min_improvement_sigma the better model of a tiny test set is refused: not resolved."""
    name = "photon_id_sigma"
    first = promote_api(trained, name, trained.low)
    assert first.promoted
    fixed = ("registry.min_improvement=0",)
    d = promote_api(trained, name, trained.high, *fixed, "registry.min_improvement_sigma=2")
    metric = next(g for g in d.gates if g.name == "metric")
    assert trained.auc[trained.high] > trained.auc[trained.low]  # ahead, on a few dozen test events
    assert not d.promoted and metric.status == "fail" and "not resolved" in metric.detail, metric.detail
    assert aliases(trained, name)["champion"] == "1"
    # the report and the command show the paired candidate-vs-champion comparison
    assert any(line.startswith("candidate vs champion (test/auc): +") for line in d.comparisons), d.comparisons
    assert "not resolved" in next(line for line in d.comparisons if "(test/auc)" in line)
    # without the sigma option the same gain passes the fixed threshold
    d = promote_api(trained, name, trained.high, *fixed)
    assert d.promoted, [g.tag_value() for g in d.gates]


@pytest.mark.slow
def test_parity_gate_failure_leaves_the_champion(trained):
    name = "parity"
    assert promote_api(trained, name, trained.worst).promoted
    d = promote_api(trained, name, trained.high, "registry.parity.atol=-1", "registry.parity.rtol=0")
    assert not d.promoted and [g.name for g in d.gates if not g.passed] == ["parity"]
    al = aliases(trained, name)
    assert al == {"champion": "1", "challenger": d.version}
    tags = version_tags(trained, name, d.version)
    assert tags["calolab.decision"] == "refused"
    assert tags["calolab.gate.parity"].startswith("fail: ONNX parity check failed")
    assert tags["calolab.gate.metric"].startswith("pass:")  # better, but not deployable as exported


@pytest.mark.slow
def test_parity_gate_catches_a_swapped_onnx_file(trained, tmp_path):
    """The ONNX file of one run against the restored net of another: the gate fails."""
    client = MlflowClient(tracking_uri=trained.uri)

    def onnx_of(run_id: str, dst: Path) -> Path:
        cand = select_candidate(
            client, EXPERIMENT, trained.uri, run_id=run_id, study=None, metric="test/auc", mode="max"
        )
        return download_onnx(cand, trained.store, dst)

    restored = restore_run(trained.worst, trained.store)
    test = frozen_test_set(restored.dm)
    inputs = [test.inputs[k] for k in test.input_names]
    parity = policy().parity.with_defaults(restored.cfg.export)
    module = restored.model.inference_module()
    result = G.parity_gate(onnx_of(trained.high, tmp_path / "other"), module, inputs, parity)
    assert result.status == "fail" and "parity check failed" in result.detail
    own = onnx_of(trained.worst, tmp_path / "own")
    assert G.parity_gate(own, module, inputs, parity).status == "pass"
    # latency gate on the same file: skipped by default, passes a generous ceiling, fails an impossible one
    lat = policy().latency
    assert G.latency_gate(own, test.inputs, lat).status == "skip"
    fast = policy("registry.latency.max_ms=10000", "registry.latency.runs=5", "registry.latency.warmup=1").latency
    assert G.latency_gate(own, test.inputs, fast).status == "pass"
    slow = policy("registry.latency.max_ms=0", "registry.latency.runs=5", "registry.latency.warmup=1").latency
    result = G.latency_gate(own, test.inputs, slow)
    assert result.status == "fail" and "batch 1" in result.detail


@pytest.mark.slow
def test_concurrent_promotions_cannot_both_win(trained):
    """Two processes promote two better candidates at once: they are serialised by the lock, the
    second compares with the first's result, and the final champion is the better one."""
    name = "race"
    assert promote_api(trained, name, trained.worst).promoted
    args = [f"registered_model={name}", "registry.min_improvement=0"]
    procs = {run: promote_cli(trained, f"run_id={run}", *args, popen=True) for run in (trained.low, trained.high)}
    results = {}
    for run, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        results[run] = (proc.returncode, out, err)
    for run, (rc, _out, err) in results.items():
        assert rc in (0, EXIT_REFUSED), f"{run}: {err}"
    client = MlflowClient(tracking_uri=trained.uri)
    version = {v.run_id: str(v.version) for v in client.search_model_versions(f"name = '{name}'")}
    assert len(version) == 3  # one version per run, no duplicates
    v_low, v_high = version[trained.low], version[trained.high]
    al = aliases(trained, name)
    assert al["champion"] == v_high
    tags_low, tags_high = version_tags(trained, name, v_low), version_tags(trained, name, v_high)
    assert tags_high["calolab.decision"] == "promoted" and "calolab.decision" in tags_low
    if tags_low["calolab.decision"] == "promoted":  # low decided first, high then compared with it
        assert tags_low["calolab.compared_with"] == "1"
        assert tags_high["calolab.compared_with"] == v_low
        assert al["previous-champion"] == v_low
        assert results[trained.low][0] == 0
    else:  # high decided first, low then compared with high (not with the stale v1) and lost
        assert tags_high["calolab.compared_with"] == "1"
        assert tags_low["calolab.compared_with"] == v_high
        assert al["previous-champion"] == "1"
        assert results[trained.low][0] == EXIT_REFUSED
    assert results[trained.high][0] == 0


@pytest.mark.slow
def test_a_promotion_that_lost_the_race_compares_with_the_new_champion(trained, monkeypatch):
    """Deterministic interleaving: another promotion wins while this one is scoring; inside the lock
    this one sees the new champion, scores it and compares with it, not with the stale one."""
    import calolab.registry.promotion as P

    name = "interleaved"
    assert promote_api(trained, name, trained.worst).promoted
    real_lock = P.promotion_lock

    @contextmanager
    def lock_after_a_rival(uri, model, timeout):
        monkeypatch.setattr(P, "promotion_lock", real_lock)  # the rival locks normally
        assert promote_api(trained, name, trained.high).promoted
        with real_lock(uri, model, timeout) as kind:
            yield kind

    monkeypatch.setattr(P, "promotion_lock", lock_after_a_rival)
    d = promote_api(trained, name, trained.low, "registry.min_improvement=0")
    assert not d.promoted
    assert d.champion_version == "2" and d.champion_run_id == trained.high
    assert "vs champion v2" in next(g for g in d.gates if g.name == "metric").detail
    assert aliases(trained, name) == {"champion": "2", "previous-champion": "1", "challenger": "3"}

    # the optimistic check (all a tracking server allows): a decision made against a champion
    # that is no longer the champion does not move the alias
    stale = Decision(
        model_name=name,
        version="3",
        run_id=trained.low,
        gates=[G.GateResult("metric", "pass", "compared with v1")],
        candidate_metrics={"test/auc": 1.0},
        champion_version="1",
        aliases_before={"champion": "1"},
    )
    apply_decision(MlflowClient(tracking_uri=trained.uri), stale)
    assert not stale.promoted and stale.gates[-1].name == "concurrency"
    assert aliases(trained, name)["champion"] == "2"
    assert version_tags(trained, name, "3")["calolab.gate.concurrency"].startswith("fail: champion moved to v2")


# ---- bad input ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_unknown_run_is_a_clear_error(trained):
    res = promote_cli(trained, "run_id=0123456789abcdef", "registered_model=first")
    assert res.returncode == 2
    err = [line for line in res.stderr.splitlines() if "error" in line]
    assert len(err) == 1 and "no MLflow run '0123456789abcdef'" in err[0], res.stderr


@pytest.mark.slow
def test_bad_inputs_leave_the_registry_untouched(trained):
    name = "bad"
    assert promote_api(trained, name, trained.worst).promoted
    before = aliases(trained, name)
    client = MlflowClient(tracking_uri=trained.uri)
    exp = client.get_experiment_by_name(EXPERIMENT).experiment_id
    bare = client.create_run(exp, tags={"dataset.digest": "0" * 64}, run_name="no-onnx").info.run_id
    client.log_metric(bare, "test/auc", 0.0)
    client.set_terminated(bare, "FINISHED")
    failed = client.create_run(exp, tags={"dataset.digest": "0" * 64}).info.run_id
    client.set_terminated(failed, "FAILED")
    cases = [
        (dict(run_id="0123456789abcdef"), RegistryError, "no MLflow run"),
        (dict(run_id=bare), RegistryError, "has no ONNX model"),
        (dict(run_id=failed), RegistryError, "FAILED"),
        (dict(run_id=trained.other), DigestMismatchError, "force=true"),
        (dict(run_id=trained.low, study="s"), ConfigError, "not both"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            promote(trained.store, EXPERIMENT, policy(), registered_model=name, **kwargs)
        assert aliases(trained, name) == before
        assert n_versions(trained, name) == 1
    with pytest.raises(RegistryError, match="did you mean 'photon_id'"):
        promote(trained.store, "photon_idd", policy(), run_id=trained.low)
    with pytest.raises(RegistryError, match="no registered model 'nope'"):
        roll_back(trained.store, "nope", policy())
    with pytest.raises(RegistryError, match="no previous-champion"):
        roll_back(trained.store, name, policy())

    # forced: compared anyway, each on its own split, and the forced comparison is recorded
    d = promote_api(trained, name, trained.other, force=True)
    assert d.gates[0].name == "dataset" and d.gates[0].detail.startswith("forced:")
    tags = version_tags(trained, name, d.version)
    assert tags["calolab.gate.dataset"].startswith("pass: forced:")
    assert aliases(trained, name)["champion"] == (d.version if d.promoted else "1")


@pytest.mark.slow
def test_registry_command_errors(trained):
    res = run_cli("registry", "list", "name=nope", f"tracking.uri={trained.uri}")
    assert res.returncode == 2 and "no registered model 'nope'" in res.stderr
    res = run_cli("registry", "lsit")
    assert res.returncode == 2 and "did you mean 'list'" in res.stderr


# ---- selection ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_selection_by_run_sweep_and_default(trained):
    client = MlflowClient(tracking_uri=trained.uri)

    def select(**kw):
        kw = {"run_id": None, "study": None, **kw}
        return select_candidate(client, EXPERIMENT, trained.uri, metric="test/auc", mode="max", **kw)

    trainings = [
        r
        for r in client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
        if r.info.run_id in trained.auc
    ]
    best = max(trainings, key=lambda r: r.data.metrics["test/auc"]).info.run_id
    assert select().run_id == best  # promotion report runs are never candidates
    cand = select(run_id=trained.low)
    assert cand.onnx_model.name == "onnx" and cand.pytorch_model.name == "pytorch"
    for run in (trained.worst, trained.low):
        client.set_tag(run, "optuna.study_name", "study-a")
    chosen = select(study="study-a")
    assert chosen.run_id == trained.low and "sweep study-a" in chosen.selected_by
    with pytest.raises(RegistryError, match="no finished run tagged optuna.study_name='study-b'"):
        select(study="study-b")
    lowest = select_candidate(
        client, EXPERIMENT, trained.uri, run_id=None, study="study-a", metric="test/auc", mode="min"
    )
    assert lowest.run_id == trained.worst


# ---- gates and policy ---------------------------------------------------------------------------


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF_DIR / "registry").glob("*.yaml")))
def test_every_registry_option_builds_a_policy(option):
    p = GatePolicy.from_config(compose_config("promote", [f"registry={option}"]).registry)
    # classifiers decide on the AUC (higher is better); generators and regressions on a distance or a
    # resolution (lower is better)
    lower_is_better = {"generator": "test/fpd", "regression": "test/resolution", "paed": "test/mse_ratio"}
    expected = (lower_is_better[option], "min") if option in lower_is_better else ("test/auc", "max")
    assert (p.metric, p.mode) == expected


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("registry.metric=test/acu", "did you mean 'test/auc'"),
        ("registry.mode=maximize", "'max' or 'min'"),
        ("registry.min_improvement=abc", "finite number"),
        ("registry.parity.events=0", "events must be >= 1"),
        ("registry.decorrelation.min_inverse_jsd=-1", "min_inverse_jsd must be >= 0"),
        ("+registry.decorrelation.bins=20", "unknown key registry.decorrelation.bins"),
        ("registry.latency.max_ms=-1", "max_ms must be >= 0"),
    ],
)
def test_bad_policy_values_are_refused(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        policy(override)


def test_metric_gate():
    p = policy()  # max, min_improvement 0.001
    assert G.metric_gate(p, {"test/auc": 0.9}, None, None, False).status == "pass"
    assert G.metric_gate(p, {"test/auc": 0.902}, {"test/auc": 0.9}, "1", False).status == "pass"
    assert G.metric_gate(p, {"test/auc": 0.9005}, {"test/auc": 0.9}, "1", False).status == "fail"
    assert G.metric_gate(p, {"test/auc": 0.9}, {"test/auc": 0.9}, "1", True).detail.startswith(
        "not better than champion"
    )
    lenient = policy("registry.min_improvement=-0.01")
    assert G.metric_gate(lenient, {"test/auc": 0.895}, {"test/auc": 0.9}, "1", False).status == "pass"
    assert G.metric_gate(lenient, {"test/auc": 0.9}, {"test/auc": 0.9}, "1", True).status == "fail"
    lower = policy("registry.mode=min", "registry.min_improvement=0")
    assert G.metric_gate(lower, {"test/auc": 0.5}, {"test/auc": 0.6}, "1", False).status == "pass"
    assert G.metric_gate(lower, {"test/auc": 0.7}, {"test/auc": 0.6}, "1", False).status == "fail"


def test_dataset_gate():
    assert G.dataset_gate("a" * 64, None, None, False).status == "pass"
    assert G.dataset_gate("a" * 64, "a" * 64, "1", False).status == "pass"
    with pytest.raises(DigestMismatchError, match="force=true"):
        G.dataset_gate("a" * 64, "b" * 64, "1", False)
    assert G.dataset_gate("a" * 64, "b" * 64, "1", True).detail.startswith("forced:")


def test_decorrelation_gate():
    rng = np.random.default_rng(0)
    n = 4000
    label = (rng.random(n) < 0.5).astype(np.int64)
    weight = np.ones(n)
    mu = rng.uniform(0, 60, n)
    independent = label + rng.normal(0, 1, n)  # the score does not look at mu
    sculpting = label + mu / 20 + rng.normal(0, 0.3, n)  # background passing the cut has high mu
    floor = policy("registry.decorrelation.min_inverse_jsd=20").decorrelation
    specs = [DecorrelationSpec.from_config("mu", {"variable": "mu", "bins": 20})]
    assert G.decorrelation_gate(label, independent, weight, {"mu": mu}, floor, specs).status == "pass"
    result = G.decorrelation_gate(label, sculpting, weight, {"mu": mu}, floor, specs)
    assert result.status == "fail" and "1/JSD" in result.detail and "test/inv_jsd50_mu" in result.detail
    assert G.inverse_jsd(label, sculpting, weight, np.zeros(n), 0.5, 20) == float("inf")  # constant variable
    no_floor = policy().decorrelation
    assert G.decorrelation_gate(label, independent, weight, {"mu": mu}, no_floor, specs).status == "skip"
    with pytest.raises(ConfigError, match="not an aux branch"):
        G.decorrelation_gate(label, independent, weight, {"ph_pt": mu}, floor, specs)
    # the evaluation's definition decides: its binning (here 2 coarse bins that hide the sculpting
    # inside the first) gives its value, and a variable it does not measure is one clear error
    coarse = [DecorrelationSpec.from_config("mu", {"variable": "mu", "bins": [0, 59, 60]})]
    detail = G.decorrelation_gate(label, sculpting, weight, {"mu": mu}, floor, coarse).detail
    assert f"= {G.inverse_jsd(label, sculpting, weight, mu, 0.5, [0, 59, 60]):.4g}" in detail
    assert detail != result.detail
    with pytest.raises(
        ConfigError, match=r"does not measure 1/JSD against it \(evaluation.decorrelation measures jet_m \(mass\)\)"
    ):
        G.decorrelation_gate(label, sculpting, weight, {"mu": mu}, floor, [DecorrelationSpec("mass", "jet_m", "m")])


# ---- the lock -----------------------------------------------------------------------------------


def _try_lock(uri: str, name: str, timeout: float, queue) -> None:
    try:
        with promotion_lock(uri, name, timeout) as kind:
            queue.put(("acquired", kind))
    except LockTimeoutError as err:
        queue.put(("timeout", str(err)))


def _contend(uri: str, name: str) -> None:
    """While this process holds the lock, another process cannot take it; afterwards it can."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    with promotion_lock(uri, name, 5):
        proc = ctx.Process(target=_try_lock, args=(uri, name, 0.3, queue))
        proc.start()
        proc.join(30)
        outcome, detail = queue.get(timeout=5)
        assert outcome == "timeout" and "registry.lock_timeout_s" in detail
        proc = ctx.Process(target=_try_lock, args=(uri, name, 30, queue))  # waits for the release below
        proc.start()
        time.sleep(0.3)
        assert queue.empty()
    proc.join(30)
    assert queue.get(timeout=5)[0] == "acquired"
    # another model's lock is independent
    with promotion_lock(uri, name, 5):
        proc = ctx.Process(target=_try_lock, args=(uri, name + "-other", 0.3, queue))
        proc.start()
        proc.join(30)
        assert queue.get(timeout=5)[0] == "acquired"


def test_sqlite_store_uses_a_file_lock_next_to_the_database(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _contend(uri, "m")
    assert lock_file(uri, "m").parent == tmp_path


@pytest.mark.postgres
def test_postgresql_store_uses_an_advisory_lock(postgres_url):
    uri = postgres_url.replace("postgresql://", "postgresql+psycopg2://", 1)
    _contend(uri, f"calolab-test-{os.getpid()}")
    assert -(2**63) <= advisory_key("m") < 2**63


def test_lock_kind_per_store():
    """A tracking server gets the registry-tags lock (exercised through a real server in
    tests/test_13_server.py); a store with no lock at all stays optimistic."""
    assert lock_kind("http://127.0.0.1:5000") == lock_kind("https://mlflow.example.org") == "registry-tags"
    assert lock_kind("mysql://db/mlflow") == "optimistic"


def test_command_line_spellings_of_experiment_and_sweep():
    from calolab.commands.promote import rename_aliases

    args = ["experiment=photon_id", "sweep=s1", "registry.metric=test/auc", "run_id=abc", "--cfg", "job"]
    assert rename_aliases(args) == ["experiment_name=photon_id", "study=s1", *args[2:]]
    cfg = compose_config("promote", rename_aliases(["experiment=photon_id", "force=true"]))
    assert cfg.experiment_name == "photon_id" and cfg.force is True and cfg.registry.force_digest is False
    assert compose_config("promote", []).force is False  # defaults to registry.force_digest
