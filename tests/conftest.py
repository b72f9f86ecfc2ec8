"""Shared fixtures: compose the real Hydra configs (shrunk for tests), run the CLI, and a
PostgreSQL server for the tests marked ``postgres``.

``postgres_url`` (one per session) is the machine's server at 127.0.0.1:5432 (user postgres,
database test) when it answers; otherwise the tests start their own real server from the
``pgserver`` wheel (PostgreSQL binaries bundled; as root it runs them as a system user
``pgserver``, which it creates) in a temporary folder, listening on a Unix socket only, and remove
it afterwards. ``CALOLAB_TEST_PG=own`` always starts one, ``CALOLAB_TEST_PG=postgresql://...`` uses
that server; unset (or ``auto``) chooses as above. The PostgreSQL tests never skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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


#: the photon_id smoke sample the end-to-end tests train on (generated once per session)
SMOKE_EVENTS = 240
SMOKE_CHUNK = 120


def smoke_args(data_dir: Path, *extra: str) -> list[str]:
    """``calolab train`` arguments of a smoke training on the session's smoke sample in ``data_dir``."""
    return [
        "experiment=photon_id",
        "debug=smoke",
        f"paths.data_dir={data_dir}",
        f"generate.n_events={SMOKE_EVENTS}",
        f"generate.chunk_size={SMOKE_CHUNK}",
        *extra,
    ]


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory) -> Path:
    """A data folder holding the photon_id smoke sample, generated once per test session.

    Trainings pass ``smoke_args(smoke_data, ...)``; their dataset cache is built in the same folder
    on first use and reused after.
    """
    from omegaconf import OmegaConf

    from calolab.app import compose_config
    from calolab.pipeline.samples import ensure_sample

    data_dir = tmp_path_factory.mktemp("smoke-data")
    cfg = compose_config("train", smoke_args(data_dir))
    ensure_sample(OmegaConf.to_container(cfg.generate, resolve=True), progress=False)
    return data_dir


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


# -- PostgreSQL --------------------------------------------------------------------------------
#: the machine's server, used when it answers
MACHINE_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
#: auto (default) | own | a postgresql:// URL
POSTGRES_CHOICE = "CALOLAB_TEST_PG"


def with_query(url: str, **params: str) -> str:
    """``url`` with ``params`` added to its query string (``host=`` of a socket is kept)."""
    parts = urlsplit(url)
    query = urlencode([*parse_qsl(parts.query), *params.items()])
    return urlunsplit(parts._replace(query=query))


def _answers(url: str) -> bool:
    import psycopg2

    try:
        psycopg2.connect(url, connect_timeout=3).close()
    except psycopg2.OperationalError:
        return False
    return True


@contextmanager
def own_postgres() -> Iterator[str]:
    """A real PostgreSQL server of the tests' own (pgserver), with a database ``test``; its URL."""
    import psycopg2

    root = Path(tempfile.mkdtemp(prefix="calolab-test-pg-"))
    with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set" on servers
        warnings.simplefilter("ignore")
        import pgserver

        server = pgserver.get_server(root / "pgdata", cleanup_mode="delete")
    try:
        socket_dir = server.get_postmaster_info().socket_dir
        admin = f"postgresql://postgres@/postgres?host={socket_dir}"
        conn = psycopg2.connect(admin)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE test")
        conn.close()
        yield f"postgresql://postgres@/test?host={socket_dir}"
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The PostgreSQL server of the ``postgres`` tests (see the module docstring); fails, never skips."""
    choice = os.environ.get(POSTGRES_CHOICE, "auto")
    if "://" in choice:
        yield choice
    elif choice not in ("auto", "own"):
        raise pytest.UsageError(f"{POSTGRES_CHOICE} must be auto, own or a postgresql:// URL, but got {choice!r}")
    elif choice == "auto" and _answers(MACHINE_POSTGRES):
        yield MACHINE_POSTGRES
    else:
        with own_postgres() as url:
            yield url


# -- the MLflow tracking server (tests/mlflow_server.py): one per session, shared by every module --
from tests.mlflow_server import mlflow_server, server_sweep  # noqa: E402, F401
