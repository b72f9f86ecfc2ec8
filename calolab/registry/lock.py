"""The promotion lock: one decision at a time per registered model, so two promotions cannot both win.

The decision section (read the champion, compare, move the aliases, record the decision) runs
under a lock that matches the tracking backend:

- ``sqlite:///<db>``: an exclusive ``fcntl.flock`` on ``<db>.registry-<hash>.lock`` next to the
  database (processes on one host, or on a shared file system whose locks work across hosts).
- ``postgresql://...`` (MLflow's SQL store on PostgreSQL): a session-level PostgreSQL advisory
  lock (``pg_try_advisory_lock``) on a key derived from the model name, in the same database, so
  it holds across hosts.
- anything else (an ``http(s)://`` tracking server, MySQL, ...): no lock is available through
  MLflow's API; the decision is *optimistic*: the champion alias is re-read right before it is
  moved and again after, and the promotion is refused when it changed. Two promotions that
  interleave exactly between that check and the move can still both move the alias; the one
  that moved last keeps it, and both decisions are recorded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from calolab.errors import InputFileError
from calolab.registry.errors import LockTimeoutError
from calolab.tracking import scrub_uri

log = logging.getLogger(__name__)

FILE, ADVISORY, OPTIMISTIC = "file", "postgresql-advisory", "optimistic"
_POLL_S = 0.05
_POSTGRES = re.compile(r"^postgres(ql)?(\+[a-z0-9_]+)?://", re.IGNORECASE)


def lock_kind(uri: str) -> str:
    """Which lock :func:`promotion_lock` takes for a tracking URI."""
    if uri.startswith("sqlite:///"):
        return FILE
    if _POSTGRES.match(uri):
        return ADVISORY
    return OPTIMISTIC


def _key(model_name: str) -> bytes:
    return hashlib.sha256(f"calolab.registry:{model_name}".encode()).digest()


def lock_file(uri: str, model_name: str) -> Path:
    """The lock file of ``model_name`` next to the SQLite database of ``uri``."""
    db = Path(uri.removeprefix("sqlite:///"))
    return db.with_name(f"{db.name}.registry-{_key(model_name).hex()[:12]}.lock")


def advisory_key(model_name: str) -> int:
    """A signed 64-bit PostgreSQL advisory-lock key for ``model_name``."""
    return int.from_bytes(_key(model_name)[:8], "big", signed=True)


@contextmanager
def _file_lock(path: Path, timeout_s: float, model_name: str) -> Iterator[None]:
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o664)
    except OSError as err:
        raise InputFileError(f"cannot open the promotion lock file {path}: {err}") from err
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeoutError(
                        f"another promotion of {model_name!r} held the lock {path} for more than "
                        f"{timeout_s:g} s (registry.lock_timeout_s)"
                    ) from None
                time.sleep(_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def _advisory_lock(uri: str, timeout_s: float, model_name: str) -> Iterator[None]:
    import psycopg2

    dsn = _POSTGRES.sub("postgresql://", uri)
    key = advisory_key(model_name)
    try:
        conn = psycopg2.connect(dsn)
    except psycopg2.Error as err:
        raise InputFileError(f"cannot connect to {scrub_uri(uri)} for the promotion lock: {err}") from err
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            deadline = time.monotonic() + timeout_s
            while True:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
                if cur.fetchone()[0]:
                    break
                if time.monotonic() >= deadline:
                    raise LockTimeoutError(
                        f"another promotion of {model_name!r} held the PostgreSQL advisory lock {key} for more "
                        f"than {timeout_s:g} s (registry.lock_timeout_s)"
                    )
                time.sleep(_POLL_S)
            try:
                yield
            finally:
                cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
    finally:
        conn.close()  # also releases the lock should the unlock have failed


@contextmanager
def promotion_lock(uri: str, model_name: str, timeout_s: float) -> Iterator[str]:
    """Hold the promotion lock of ``model_name`` in the store at ``uri``; yields the lock kind."""
    kind = lock_kind(uri)
    if kind == FILE:
        with _file_lock(lock_file(uri, model_name), timeout_s, model_name):
            yield kind
    elif kind == ADVISORY:
        with _advisory_lock(uri, timeout_s, model_name):
            yield kind
    else:
        log.warning(
            "calolab promote: no lock is available for %s; the champion alias is checked before and after "
            "it moves (optimistic)",
            scrub_uri(uri),
        )
        yield kind
