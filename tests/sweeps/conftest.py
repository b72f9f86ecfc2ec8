"""Fixtures of the sweep tests: a fresh schema per test in the session's PostgreSQL server
(``postgres_url`` in tests/conftest.py: the machine's at 127.0.0.1:5432, or one the tests start).
The tests that use it fail, never skip, when no server can be had."""

from __future__ import annotations

import uuid

import psycopg2
import pytest

from tests.conftest import with_query


@pytest.fixture
def pg_storage(postgres_url):
    """``(storage URL whose search_path is a fresh schema, schema)``; the schema is dropped after."""
    schema = f"calolab_sweep_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(postgres_url, connect_timeout=5)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield with_query(postgres_url, options=f"-csearch_path={schema}"), schema
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP SCHEMA "{schema}" CASCADE')
        conn.close()
