"""Issue 16, healthy vs mixed clusters: ``bench/physics_healthy.py``'s comparison at a tiny size.

Two smoke trainings of the presets photon_id_mixture and photon_id_healthy on one sample are
restored and scored on the same test events by the bench's own functions, compared per category
with paired bootstrap errors, and logged as a comparison run; two runs tested on different events
are refused with one clear error.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import uproot
from mlflow.tracking import MlflowClient

from bench import physics_healthy as bench
from calolab.app import compose_config
from calolab.errors import CalolabError
from calolab.generation.writer import write_tree
from calolab.pipeline.train import train
from calolab.registry.selection import KIND_TAG
from calolab.tracking import TrackingStore


@pytest.fixture(scope="module")
def mixture_sample(smoke_data, tmp_path_factory) -> Path:
    """The session's smoke photon sample with every odd event number flagged unhealthy.

    Only the flag changes (the cells stay healthy): enough to exercise the categories of the
    comparison at no generation cost; the bench measures the physics on a generated mixture.
    """
    out = tmp_path_factory.mktemp("mixture-sample")
    files = sorted((smoke_data / "photons-smoke").glob("*.root"))
    assert files, f"no smoke sample in {smoke_data}"
    for path in files:
        with uproot.open(path) as f:
            arrays = f["photons"].arrays(library="np")
        arrays["is_unhealthy"] = arrays["event_number"] % 2 == 1
        write_tree(out / path.name, "photons", arrays)
    return out


def train_smoke(sample: Path, root: Path, preset: str, *extra: str) -> str:
    cfg = compose_config(
        "train",
        [
            f"experiment={preset}",
            "debug=smoke",
            "~generate",
            f"data.files=[{sample}/*.root]",
            f"paths.data_dir={root / 'data'}",
            f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
            "tracking.log_models=false",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            *extra,
        ],
    )
    return train(cfg)["run_id"]


@pytest.fixture(scope="module")
def runs(mixture_sample, tmp_path_factory) -> tuple[TrackingStore, dict[str, str], Path]:
    root = tmp_path_factory.mktemp("healthy-bench")
    run_ids = {net: train_smoke(mixture_sample, root, preset) for net, preset in bench.PRESETS.items()}
    store = TrackingStore.resolve(f"sqlite:///{root / 'mlflow.db'}", str(root))
    return store, run_ids, root


@pytest.mark.slow
def test_bench_compares_both_nets_on_the_same_test_events(runs):
    store, run_ids, root = runs
    client = MlflowClient(store.uri)
    logged = {net: client.get_run(run_id).data for net, run_id in run_ids.items()}
    assert logged["healthy"].params["data.train_selection"] == "~is_unhealthy"
    scored = bench.score_runs(store, run_ids)
    n = scored.label.size
    assert n == logged["mixture"].metrics["test/n_events"] == logged["healthy"].metrics["test/n_events"]
    assert set(scored.scores) == {"mixture", "healthy"} and all(s.shape == (n,) for s in scored.scores.values())
    assert not np.allclose(scored.scores["mixture"], scored.scores["healthy"])  # two different nets
    # the mixture net with the mixture run's weights and cuts: what its own evaluation logged
    m = logged["mixture"].metrics
    table = bench.compare(scored, replicas=50, seed=0)
    rows = table["categories"]
    assert list(rows) == ["all", "healthy", "unhealthy"]
    assert rows["all"]["auc_mixture"] == pytest.approx(m["test/auc"], abs=1e-6)
    assert rows["all"]["eff_mixture"] == pytest.approx(m["test/eff_at_baseline_rej"], abs=1e-6)
    assert rows["unhealthy"]["auc_mixture"] == pytest.approx(m["test/auc_unhealthy"], abs=1e-6)
    assert rows["healthy"]["n_events"] + rows["unhealthy"]["n_events"] == rows["all"]["n_events"] == n
    assert rows["unhealthy"]["n_events"] == m["test/n_events_unhealthy"] > 0
    for name, row in rows.items():
        assert "skipped" not in row, f"{name}: the smoke sample must hold both classes in each category"
        for fig in ("auc", "eff"):
            assert row[f"d_{fig}"] == pytest.approx(row[f"{fig}_mixture"] - row[f"{fig}_healthy"])
            for key in (f"{fig}_mixture_err", f"{fig}_healthy_err", f"d_{fig}_err"):
                assert np.isfinite(row[key]) and row[key] >= 0, (name, key)
            assert row[f"d_{fig}_resolved"] == (abs(row[f"d_{fig}"]) > 2 * row[f"d_{fig}_err"])
    text = bench.format_table(table)
    assert run_ids["mixture"] in text and run_ids["healthy"] in text and "unhealthy" in text

    comparison = bench.log_comparison(store, table, text)
    run = client.get_run(comparison)
    assert run.data.tags[KIND_TAG] == "comparison"  # never taken for a training by the registry
    assert client.get_experiment(run.info.experiment_id).name == "photon_id_mixture"
    assert run.data.metrics["compare/unhealthy/d_auc"] == pytest.approx(rows["unhealthy"]["d_auc"])
    assert run.data.metrics["compare/all/n_events"] == n
    path = client.download_artifacts(comparison, f"{bench.ARTIFACT}.json", str(root))
    assert json.loads(Path(path).read_text())["runs"] == run_ids
    for run_id in run_ids.values():
        assert client.get_run(run_id).data.tags[bench.COMPARISON_RUN_TAG] == comparison


@pytest.mark.slow
def test_bench_refuses_runs_tested_on_different_events(runs, mixture_sample):
    store, run_ids, root = runs
    other = train_smoke(mixture_sample, root, "photon_id_healthy", "data.split_salt=1")
    with pytest.raises(CalolabError, match=r"were tested on different events .* train both on one sample"):
        bench.score_runs(store, {"mixture": run_ids["mixture"], "healthy": other})
