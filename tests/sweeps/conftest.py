"""Fixtures of the sweep tests: a fresh schema in the local PostgreSQL (127.0.0.1:5432, user
postgres, database test) per test. Without the server the tests that use it fail, never skip."""

from __future__ import annotations

import uuid

import psycopg2
import pytest

DSN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_storage():
    schema = f"calolab_sweep_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(DSN, connect_timeout=5)  # fails (not skips) without the server
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{DSN}?options=-csearch_path%3D{schema}", schema
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP SCHEMA "{schema}" CASCADE')
        conn.close()
