"""The promotion lock: one decision at a time per registered model, so two promotions cannot both win.

The decision section (read the champion, compare, move the aliases, record the decision) runs
under a lock that matches the tracking backend:

- ``sqlite:///<db>``: an exclusive ``fcntl.flock`` on ``<db>.registry-<hash>.lock`` next to the
  database (processes on one host, or on a shared file system whose locks work across hosts).
- ``postgresql://...`` (MLflow's SQL store on PostgreSQL): a session-level PostgreSQL advisory
  lock (``pg_try_advisory_lock``) on a key derived from the model name, in the same database, so
  it holds across hosts.
- ``http(s)://`` (a tracking server, whose database clients usually cannot reach): a lock kept in
  the registered model's own tags through MLflow's REST API (Lamport's bakery algorithm, which
  needs nothing but atomic writes and reads of separate variables, here one tag per contender,
  ``calolab.lock.<token>``). A contender announces itself (``choosing``), reads every contender's
  ticket, takes the next number, and enters when no one is still choosing and no lower ticket
  remains; it deletes its tag on leaving. Each contender rewrites its tag every
  :data:`HEARTBEAT_S` while it waits or holds the lock; a tag that has not changed for
  :data:`STALE_S` (a process killed with ``kill -9``) is removed by the next contender. The model
  is created first when it does not exist yet. Writing tags needs EDIT on the registered model,
  which a promotion needs anyway.
- anything else (MySQL, ...): no lock; the decision is *optimistic*: the champion alias is
  re-read right before it is moved and again after, and the promotion is refused when it changed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from calolab.errors import InputFileError
from calolab.keys import PROMOTION_LOCK_TAG_PREFIX as LOCK_TAG
from calolab.registry.errors import LockTimeoutError, RegistryError
from calolab.tracking import scrub_uri

log = logging.getLogger(__name__)

FILE, ADVISORY, REGISTRY, OPTIMISTIC = "file", "postgresql-advisory", "registry-tags", "optimistic"
#: seconds between a contender's heartbeats, and after which an unchanged tag is abandoned
HEARTBEAT_S, STALE_S = 2.0, 30.0
_SERVER_POLL_S = 0.2
_POLL_S = 0.05
_POSTGRES = re.compile(r"^postgres(ql)?(\+[a-z0-9_]+)?://", re.IGNORECASE)


def lock_kind(uri: str) -> str:
    """Which lock :func:`promotion_lock` takes for a tracking URI."""
    if uri.startswith("sqlite:///"):
        return FILE
    if _POSTGRES.match(uri):
        return ADVISORY
    if uri.startswith(("http://", "https://")):
        return REGISTRY
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


class _Contender:
    """One contender's tag in the registry lock, rewritten by a heartbeat thread while it lives."""

    def __init__(self, client, model_name: str):
        self.client, self.model = client, model_name
        self.key = LOCK_TAG + uuid.uuid4().hex[:16]
        self.who = f"{socket.gethostname()}:{os.getpid()}"
        self.number, self.beat = 0, 0
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._heartbeat, name="calolab-lock-heartbeat", daemon=True)

    def write(self, number: int | None = None) -> None:
        with self._mutex:
            if number is not None:
                self.number = number
            self.beat += 1
            state = "choosing" if self.number == 0 else str(self.number)
            self.client.set_registered_model_tag(self.model, self.key, f"{state} {self.beat} {self.who}")

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.write()
            except Exception as err:  # a missed beat is retried; the lock is abandoned only after STALE_S
                log.debug("promotion lock heartbeat failed: %s", err)

    def start(self) -> None:
        self.write(0)
        self._thread.start()

    def leave(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        with self._mutex:
            try:
                self.client.delete_registered_model_tag(self.model, self.key)
            except Exception as err:  # the next contender removes it once stale
                log.warning("could not remove the promotion lock tag %s of %r: %s", self.key, self.model, err)


def ensure_registered_model(client, model_name: str, model_tags: dict | None = None) -> None:
    """Create registered model ``model_name`` (with ``model_tags`` and calolab's description) if missing."""
    from mlflow.exceptions import MlflowException

    from calolab.registry.registration import DESCRIPTION, registered_model

    if registered_model(client, model_name) is not None:
        return
    try:
        client.create_registered_model(
            model_name, tags=model_tags or {}, description=DESCRIPTION.format(name=model_name)
        )
    except MlflowException as err:  # created meanwhile by another promotion
        if registered_model(client, model_name) is None:
            raise RegistryError(f"cannot create registered model {model_name!r}: {err}") from err


def _contenders(client, model_name: str, me: str) -> dict[str, str]:
    tags = client.get_registered_model(model_name).tags
    return {k: v for k, v in tags.items() if k.startswith(LOCK_TAG) and k != me}


@contextmanager
def _registry_lock(uri: str, timeout_s: float, model_name: str) -> Iterator[None]:
    """Lamport's bakery over the registered model's tags (see the module docstring)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    ensure_registered_model(client, model_name)
    me = _Contender(client, model_name)
    seen: dict[str, tuple[str, float]] = {}  # tag -> (value, when it was first seen with that value)

    def alive(others: dict[str, str]) -> dict[str, str]:
        now = time.monotonic()
        live = {}
        for key, value in others.items():
            if key not in seen or seen[key][0] != value:
                seen[key] = (value, now)
            if now - seen[key][1] < STALE_S:
                live[key] = value
            else:
                log.warning("removing the abandoned promotion lock tag %s (%s) of %r", key, value, model_name)
                try:
                    client.delete_registered_model_tag(model_name, key)
                except Exception:  # removed meanwhile by another contender
                    pass
        return live

    try:
        me.start()
        numbers = [int(v.split()[0]) for v in _contenders(client, model_name, me.key).values() if v[:1].isdigit()]
        me.write(max(numbers, default=0) + 1)
        deadline = time.monotonic() + timeout_s
        while True:
            others = alive(_contenders(client, model_name, me.key))
            ahead = [
                k for k, v in others.items() if v.startswith("choosing") or (int(v.split()[0]), k) < (me.number, me.key)
            ]
            if not ahead:
                break
            if time.monotonic() >= deadline:
                holders = ", ".join(sorted(others[k].split(maxsplit=2)[-1] for k in ahead))
                raise LockTimeoutError(
                    f"another promotion of {model_name!r} ({holders}) held the registry lock for more than "
                    f"{timeout_s:g} s (registry.lock_timeout_s)"
                )
            time.sleep(_SERVER_POLL_S)
        yield
    finally:
        me.leave()


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
    elif kind == REGISTRY:
        with _registry_lock(uri, timeout_s, model_name):
            yield kind
    else:
        log.warning(
            "calolab promote: no lock is available for %s; the champion alias is checked before and after "
            "it moves (optimistic)",
            scrub_uri(uri),
        )
        yield kind
