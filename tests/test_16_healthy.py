"""Issue 16, healthy vs mixed clusters: ``data.train_selection`` keeps unhealthy clusters out of
training and validation only, ``evaluation.subsets`` evaluates the same test events per category,
and the presets photon_id_healthy / photon_id_mixture train on one sample and test on the same
events (a smoke run of the healthy one, end to end through the command line)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from calolab.app import compose_config
from calolab.errors import ConfigError
from calolab.evaluation import ClassifierEvaluation
from calolab.evaluation.metrics import auc
from tests.conftest import SMOKE_CHUNK, SMOKE_EVENTS, run_cli
from tests.datamodules import AUX, make_dm, write_sample


def splits(dm) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """split -> (event numbers, is_unhealthy) of the cache."""
    dm.prepare_data()
    dm.setup("fit")
    return {
        s: (np.asarray(dm.arrays(s).aux["event_number"]), np.asarray(dm.arrays(s).aux["is_unhealthy"]))
        for s in ("train", "val", "test")
    }


def test_train_selection_keeps_test_split_whole(tmp_path):
    write_sample(tmp_path / "data", per_file=400)  # 10% unhealthy, drawn per event
    aux = [*AUX, "is_unhealthy"]
    everything = splits(make_dm(tmp_path, aux=aux))
    healthy = splits(make_dm(tmp_path, aux=aux, train_selection="~is_unhealthy"))
    for split in ("train", "val"):  # the same events as without it, less the unhealthy ones
        numbers, bad = everything[split]
        assert bad.any(), "the sample must hold unhealthy clusters for this test to mean anything"
        np.testing.assert_array_equal(healthy[split][0], numbers[~bad])
        assert not healthy[split][1].any()
    np.testing.assert_array_equal(healthy["test"][0], everything["test"][0])  # the same test events, mixture kept
    assert healthy["test"][1].any()
    dm = make_dm(tmp_path, aux=aux, train_selection="~is_unhealthy")
    summary = dm.preprocessing_summary()
    assert summary["train_selection"] == "~is_unhealthy"
    assert summary["train_selection_dropped"] == int(everything["train"][1].sum() + everything["val"][1].sum())
    assert dm.digest != make_dm(tmp_path, aux=aux).digest  # another cache: other training events


def test_train_selection_bad_input(tmp_path):
    write_sample(tmp_path / "data", n_files=1)
    dm = make_dm(tmp_path, train_selection="~is_unhealthy")  # is_unhealthy not among aux
    with pytest.raises(
        ConfigError, match=r"train_selection '~is_unhealthy' uses is_unhealthy, which is not among the aux"
    ):
        dm.prepare_data()
    with pytest.raises(ConfigError, match="train_selection .* uses and/or/not"):
        make_dm(tmp_path, train_selection="not is_unhealthy")


def test_subsets_are_the_metrics_of_their_events(tmp_path):
    rng = np.random.default_rng(3)
    n = 4000
    y = rng.random(n) < 0.5
    bad = rng.random(n) < 0.3
    # a worse discriminant on the unhealthy events
    score = np.where(y, 1.0, 0.0) * np.where(bad, 0.3, 1.5) + rng.normal(size=n)
    w = rng.uniform(0.5, 1.5, n)
    aux = {"is_unhealthy": bad, "x": score + rng.normal(size=n)}
    split = {"label": y.astype(np.float32), "weight": w, "aux": aux}
    ev = ClassifierEvaluation(
        subsets={
            "healthy": {"selection": "~is_unhealthy", "label": "Healthy"},
            "unhealthy": {"selection": "is_unhealthy"},
        },
        correlation_maps=False,
        bootstrap_replicas=10,
    )
    result = ev.evaluate(score=score, test=split, train=split, out_dir=tmp_path)
    m = result.metrics
    assert m["test/n_events_healthy"] == (~bad).sum() and m["test/n_events_unhealthy"] == bad.sum()
    assert m["test/auc_healthy"] == pytest.approx(auc(y[~bad], score[~bad], w[~bad]))
    assert m["test/auc_unhealthy"] == pytest.approx(auc(y[bad], score[bad], w[bad]))
    assert m["test/auc_unhealthy"] + 3 * m["test/auc_unhealthy_err"] < m["test/auc_healthy"]
    assert result.tables["subsets"]["healthy"]["label"] == "Healthy"
    with pytest.raises(ConfigError, match="evaluation.subsets.odd: unknown keys"):
        ClassifierEvaluation(subsets={"odd": {"selection": "x > 0", "cut": 1}})
    with pytest.raises(ConfigError, match="uses nope, which is not among the aux"):
        ClassifierEvaluation(subsets={"s": {"selection": "nope > 0"}}, bootstrap_replicas=10).evaluate(
            score=score, test=split, train=split, out_dir=tmp_path
        )


def test_presets_share_sample_and_test_events():
    healthy, mixture = (
        compose_config("train", [f"experiment={e}"]) for e in ("photon_id_healthy", "photon_id_mixture")
    )
    assert healthy.generate == mixture.generate  # one sample: the same test events
    assert healthy.data.train_selection == "~is_unhealthy" and mixture.data.get("train_selection") is None
    assert (healthy.data.split, healthy.data.split_salt) == (mixture.data.split, mixture.data.split_salt)
    assert healthy.experiment_name != mixture.experiment_name


@pytest.mark.slow
def test_healthy_preset_smoke(smoke_data, tmp_path):
    """photon_id_healthy from the command line, on the session's smoke sample (generated healthy: the
    preset's unhealthy fraction is dropped to reuse it), reading is_unhealthy from generated ROOT files."""
    db = tmp_path / "mlflow.db"
    res = run_cli(
        "train",
        "experiment=photon_id_healthy",
        "debug=smoke",
        f"paths.data_dir={smoke_data}",
        f"generate.n_events={SMOKE_EVENTS}",
        f"generate.chunk_size={SMOKE_CHUNK}",
        "~generate.sample_overrides",
        f"tracking.uri=sqlite:///{db}",
        "tracking.log_models=false",
        "trainer.max_epochs=1",
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    run = client.search_runs([client.get_experiment_by_name("photon_id_healthy").experiment_id])[0]
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    assert m["test/n_events_healthy"] == m["test/n_events"] > 0 and m["test/n_events_unhealthy"] == 0
    assert "test/auc_healthy" in m and "test/auc_unhealthy" not in m  # an empty category is skipped, not zero
    assert run.data.params["data.train_selection"] == "~is_unhealthy"
    path = client.download_artifacts(run.info.run_id, "evaluation/tables.json", str(tmp_path))
    table = json.loads(Path(path).read_text())["subsets"]
    assert table["unhealthy"]["skipped"] and table["healthy"]["n_events"] == m["test/n_events"]
