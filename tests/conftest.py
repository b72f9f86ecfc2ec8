"""Shared fixtures: compose the real Hydra configs (shrunk for tests) and run the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from calolab.app import CONF_DIR, ROOT_DIR


@pytest.fixture
def compose_cfg() -> Callable[..., DictConfig]:
    """Compose ``conf/<name>.yaml`` with overrides, as the command line would."""

    def _compose(name: str, overrides: list[str] | None = None) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name=name, overrides=overrides or [])
        return cfg

    return _compose


@pytest.fixture
def generate_cfg(compose_cfg, tmp_path) -> Callable[..., DictConfig]:
    """A small ``calolab generate`` config writing into ``tmp_path``."""

    def _cfg(
        sample: str, n_events: int = 20, out: Path | None = None, overrides: list[str] | None = None
    ) -> DictConfig:
        cfg = compose_cfg(
            "generate",
            [
                f"sample={sample}",
                f"n_events={n_events}",
                f"out={out or tmp_path / sample}",
                "progress=false",
                *(overrides or []),
            ],
        )
        with open_dict(cfg):
            cfg.out = str(out or tmp_path / sample)
        return cfg

    return _cfg


def run_cli(
    *args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run the installed ``calolab`` console script (as a user would) and capture its output."""
    exe = Path(sys.executable).with_name("calolab")
    full_env = {**os.environ, **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [str(exe), *args], cwd=cwd or ROOT_DIR, env=full_env, capture_output=True, text=True, timeout=timeout
    )
