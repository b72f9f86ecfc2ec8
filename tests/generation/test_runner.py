"""The generation runner and ``calolab generate`` command line: chunks, output, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import uproot

from calolab.errors import ConfigError, InputFileError
from calolab.generation.runner import plan_chunks, reusable_sample, run_generation
from tests.conftest import run_cli


def test_plan_chunks_exact_totals():
    chunks = plan_chunks(1003, 100, 0.37)
    assert sum(c.n_events for c in chunks) == 1003
    assert sum(c.n_signal for c in chunks) == round(0.37 * 1003)
    assert [c.start for c in chunks[:3]] == [0, 100, 200]
    assert chunks[-1].n_events == 3


def test_minbias_schema_and_manifest(generate_cfg, tmp_path):
    cfg = generate_cfg("minbias", n_events=30, overrides=["chunk_size=20"])
    manifest = run_generation(cfg, "minbias")
    out = tmp_path / "minbias"
    files = sorted(p.name for p in out.iterdir())
    assert files == ["manifest.json", "minbias_0000.root", "minbias_0001.root"]
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["n_events"] == 30 and on_disk["seed"] == cfg.seed
    assert {"pythia8mc", "uproot", "numpy"} <= set(on_disk["versions"])
    assert [f["n_events"] for f in manifest["files"]] == [20, 10]
    with uproot.open(out / "minbias_0001.root") as f:
        t = f["particles"]
        assert t.classname.startswith("TTree")
        arr = t.arrays()
    assert arr["event_number"].tolist() == list(range(20, 30))
    # final-state particles of soft QCD events, MeV
    pt = np.asarray(arr["part_pt"][0])
    assert len(pt) > 5 and 10 < np.median(pt) < 5000


def test_reuse_matches_and_refuses_different(generate_cfg, tmp_path):
    cfg = generate_cfg("minbias", n_events=10)
    run_generation(cfg, "minbias")
    assert reusable_sample(cfg, "minbias")["n_events"] == 10
    other = generate_cfg("minbias", n_events=11)
    with pytest.raises(InputFileError, match="different n_events"):
        reusable_sample(other, "minbias")


def test_invalid_chunking_option(generate_cfg):
    with pytest.raises(ConfigError, match="chunk_size must be > 0"):
        run_generation(generate_cfg("minbias", overrides=["chunk_size=0"]), "minbias")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sample=photonz"], "unknown sample 'photonz'; did you mean 'photons'"),
        (["n_events=0"], "n_events must be > 0, but got n_events=0"),
        (["n_events=-5"], "n_events must be > 0"),
        (["workers=0"], "workers must be >= 1"),
        (["pileup.mu=-1"], "pileup.mu must be a finite number >= 0"),
        (
            ['sample.signal_settings=["PromptPhotn:all = on"]'],
            "invalid Pythia setting 'PromptPhotn:all = on'",
        ),
    ],
)
def test_bad_input_one_line_nonzero_nothing_left(tmp_path, args, message):
    out = tmp_path / "out"
    res = run_cli("generate", f"out={out}", "n_events=10", *args)
    assert res.returncode != 0
    err_lines = [line for line in res.stderr.splitlines() if "error" in line]
    assert len(err_lines) == 1, res.stderr
    assert message in err_lines[0]
    assert not out.exists(), "a failed generation must not leave its output folder behind"


def test_non_empty_out_is_refused_and_kept(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    res = run_cli("generate", "sample=minbias", f"out={out}", "n_events=5")
    assert res.returncode != 0
    assert f"output directory {out} is not empty" in res.stderr
    assert (out / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]


def test_unwritable_out(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = run_cli("generate", "sample=minbias", f"out={blocker}/sub", "n_events=5")
    assert res.returncode != 0
    assert "not writable" in res.stderr or "not a directory" in res.stderr


def test_failure_midway_leaves_no_complete_looking_file(generate_cfg, tmp_path, monkeypatch):
    """A chunk failing after others were written: no .root, no manifest, no folder."""
    from calolab.generation.samples import minbias

    calls = {"n": 0}
    original = minbias.MinBiasSample.generate

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk on fire")
        return original(self, *a, **k)

    monkeypatch.setattr(minbias.MinBiasSample, "generate", flaky)
    cfg = generate_cfg("minbias", n_events=20, overrides=["chunk_size=10"])
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_generation(cfg, "minbias")
    assert not (tmp_path / "minbias").exists()
