"""Issue 10: the PostgreSQL tests run on any machine. ``postgres_url`` is the machine's server when
it answers on 127.0.0.1:5432, else a real server the tests start (pgserver); with
``CALOLAB_TEST_PG=own`` always the latter. Both must hold what the sweep tests rely on: a working
database, schemas, and URLs that psycopg2 and SQLAlchemy (Optuna's storage) both open."""

from __future__ import annotations

import os
import uuid

import psycopg2
import pytest

from tests.conftest import MACHINE_POSTGRES, POSTGRES_CHOICE, with_query

pytestmark = pytest.mark.postgres


def test_the_session_server_answers_and_is_the_one_chosen(postgres_url):
    choice = os.environ.get(POSTGRES_CHOICE, "auto")
    with psycopg2.connect(postgres_url, connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_database(), current_setting('data_directory'), inet_server_port()")
        database, data_dir, port = cur.fetchone()
    assert database == "test"
    if choice == "own":  # our own server: a temporary data folder, reached through its Unix socket only
        assert postgres_url != MACHINE_POSTGRES
        assert "calolab-test-pg-" in data_dir
        assert port is None
    elif choice == "auto" and postgres_url == MACHINE_POSTGRES:
        assert port == 5432


def test_a_schema_url_opens_an_optuna_study(postgres_url):
    """The URL form the sweep tests pass as hydra.sweeper.storage (query options on a socket URL)."""
    import optuna

    from sweeps.storage import open_storage

    schema = f"calolab_t10_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(postgres_url, connect_timeout=5)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{schema}"')
    try:
        url = with_query(postgres_url, options=f"-csearch_path={schema}")
        study = optuna.create_study(study_name="t10", storage=open_storage(url))
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", (schema,))
            assert cur.fetchone()[0] > 0  # Optuna's tables went into the fresh schema
        assert len(optuna.load_study(study_name="t10", storage=open_storage(url)).trials) == 2
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP SCHEMA "{schema}" CASCADE')
        conn.close()
