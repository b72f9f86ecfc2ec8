"""Issue 10: a user's own configs kept outside the repository. Every ``calolab`` command accepts
Hydra's ``--config-dir DIR`` and ``hydra.searchpath=[file://DIR]``; the options found there are
accepted, listed in the one-line error for an unknown option, and offered by shell completion."""

from __future__ import annotations

from pathlib import Path

import pytest

from calolab.app import compose_config, extra_search_path, group_options, searchpath_override
from calolab.cli import check_group_choices, main
from tests.conftest import run_cli


@pytest.fixture
def user_dir(tmp_path) -> Path:
    """The user's own config folder: a data config on top of photon_id, and a paths config."""
    root = tmp_path / "calolab-configs"
    (root / "data").mkdir(parents=True)
    (root / "data" / "my_egamma.yaml").write_text(
        "# my own ntuples: photon_id's layout, a larger batch\ndefaults:\n  - photon_id\n  - _self_\nbatch_size: 77\n"
    )
    (root / "paths").mkdir()
    (root / "paths" / "my_paths.yaml").write_text(f"defaults:\n  - default\n  - _self_\ndata_dir: {tmp_path}/my-data\n")
    return root


def test_config_dir_composes_the_users_data_config(user_dir):
    res = run_cli("train", "--config-dir", str(user_dir), "data=my_egamma", "--cfg", "job")
    assert res.returncode == 0, res.stderr
    assert "batch_size: 77" in res.stdout
    assert "photon_id" in res.stdout  # ... on top of the repository's photon_id data config


def test_searchpath_composes_the_users_data_config(user_dir):
    res = run_cli("train", f"hydra.searchpath=[file://{user_dir}]", "data=my_egamma", "--cfg", "job")
    assert res.returncode == 0, res.stderr
    assert "batch_size: 77" in res.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "command", [["generate"], ["train"], ["evaluate"], ["export"], ["promote"], ["registry", "list"]]
)
def test_every_command_takes_config_dir(command, user_dir, tmp_path):
    res = run_cli(*command, "--config-dir", str(user_dir), "paths=my_paths", "--cfg", "job")
    assert res.returncode == 0, res.stderr
    assert f"data_dir: {tmp_path}/my-data" in res.stdout


def test_unknown_option_lists_the_users_options_too(user_dir, capsys):
    assert main(["train", "--config-dir", str(user_dir), "data=my_egama"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("calolab train: error: unknown data 'my_egama'; did you mean 'my_egamma'?")
    assert "my_egamma" in err.split("(options: ")[1] and "photon_id" in err.split("(options: ")[1]
    assert len(err.splitlines()) == 1
    # without the folder the option is unknown, and the error lists the repository's options only
    problem = check_group_choices(["data=my_egamma"])
    assert problem.startswith("unknown data 'my_egamma'") and "my_egamma" not in problem.split("(options: ")[1]


@pytest.mark.parametrize(
    "spelling",
    [
        lambda d: ["--config-dir", str(d)],
        lambda d: [f"--config-dir={d}"],
        lambda d: ["-cd", str(d)],
        lambda d: [f"hydra.searchpath=[file://{d}]"],
        lambda d: [f"+hydra.searchpath=['file://{d}']"],
    ],
)
def test_every_spelling_of_an_extra_folder_is_seen(spelling, user_dir):
    args = spelling(user_dir)
    assert extra_search_path(args) == [f"file://{user_dir}"]
    assert check_group_choices([*args, "data=my_egamma"]) is None
    assert check_group_choices([*args, "paths=my_paths", "data=photon_id"]) is None
    assert "unknown data 'nope'" in check_group_choices([*args, "data=nope"])


def test_a_missing_folder_is_named(tmp_path):
    missing = tmp_path / "nowhere"
    for args in (["--config-dir", str(missing)], [f"hydra.searchpath=[file://{missing}]"]):
        assert check_group_choices([*args, "data=my_egamma"]) == (
            f"config folder {missing} (--config-dir / hydra.searchpath) is not a directory"
        )


def test_relative_config_dir_and_non_group_keys(user_dir, monkeypatch):
    monkeypatch.chdir(user_dir.parent)
    assert extra_search_path(["--config-dir", user_dir.name]) == [f"file://{user_dir}"]
    with group_options(extra_search_path(["-cd", user_dir.name])) as options_of:
        assert "my_egamma" in options_of("data")
        assert options_of("seed") is None and options_of("trainer.max_epochs") is None
        assert "submitit_local" in options_of("hydra/launcher")  # Hydra's plugin groups count too
    # sweeps, interpolations and plain values are not option names
    assert check_group_choices(["data=photon_id,my_egamma", "seed=3", "trainer.max_epochs=2"]) is None


def test_searchpath_override_quotes_odd_folder_names(tmp_path):
    odd = tmp_path / "it's, [mine]"
    (odd / "data").mkdir(parents=True)
    (odd / "data" / "my_egamma.yaml").write_text("defaults:\n  - photon_id\n  - _self_\nbatch_size: 5\n")
    override = searchpath_override([f"file://{odd}"])
    assert compose_config("train", [override, "data=my_egamma"]).data.batch_size == 5
    assert check_group_choices(["--config-dir", str(odd), "data=my_egamma"]) is None


@pytest.mark.slow
def test_completion_offers_the_users_options(user_dir):
    line = f"calolab train --config-dir {user_dir} data="
    res = run_cli("-sc", "query=bash", env={"COMP_LINE": line, "COMP_POINT": str(len(line))})
    assert res.returncode == 0, res.stderr
    assert {"data=my_egamma", "data=photon_id"} <= set(res.stdout.split())
    line = f"calolab train hydra.searchpath=[file://{user_dir}] data=my"
    res = run_cli("-sc", "query=bash", env={"COMP_LINE": line, "COMP_POINT": str(len(line))})
    assert res.stdout.split() == ["data=my_egamma"]
    res = run_cli("-sc", "query=bash", env={"COMP_LINE": "calolab tr", "COMP_POINT": "10"})
    assert res.stdout.split() == ["train"]


def test_completion_script_registers_calolab():
    res = run_cli("-sc", "install=bash")
    assert res.returncode == 0, res.stderr
    assert res.stdout.rstrip().endswith("complete -o nospace -o default -F hydra_bash_completion calolab")
