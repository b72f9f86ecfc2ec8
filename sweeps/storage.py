"""Study storages: a local journal file by default, or any Optuna RDB URL.

``hydra.sweeper.storage`` is either a URL (``sqlite:///...``, ``postgresql://user@host/db``,
``mysql://...``), opened as an :class:`optuna.storages.RDBStorage` with a heartbeat so that
trials of a killed worker are failed and retried, or a file path, opened as a
:class:`optuna.storages.JournalStorage` on a :class:`JournalFileBackend` (safe for several
processes on one machine). Opening checks that the storage is reachable, before any trial.

A PostgreSQL password belongs in libpq's places (``~/.pgpass``, ``PGPASSFILE``, ``PGPASSWORD``),
not in the URL; one typed into the URL on the command line is moved there by the command line,
and one from a config file by the sweep before the trials are launched (:mod:`calolab.secrets`).
"""

from __future__ import annotations

import importlib.util
import time
import warnings
from pathlib import Path

import optuna
from alembic.util.exc import CommandError
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from sqlalchemy.exc import IntegrityError, InternalError, ProgrammingError

from calolab.errors import ConfigError
from calolab.secrets import mask

HEARTBEAT_S = 30
GRACE_S = 90
MAX_RETRY = 2
CREATION_RACES = (IntegrityError, ProgrammingError, InternalError, CommandError)
CREATE_RETRIES = 6  # workers started together race to create the tables of a fresh database


def is_url(spec: str) -> bool:
    return "://" in spec


def redact(spec: str) -> str:
    """The storage without its password, for tags, logs and error messages."""
    if not is_url(spec):
        return spec
    from sqlalchemy.engine import make_url

    try:
        return make_url(spec).render_as_string(hide_password=True)
    except Exception:
        return spec.split("://", 1)[0] + "://***"


def with_driver(url: str) -> str:
    """``postgresql://`` with the installed driver: SQLAlchemy 2.1 defaults to psycopg 3, calolab
    ships psycopg2-binary."""
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None:
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def open_storage(spec: str, *, heartbeat_s: int = HEARTBEAT_S, grace_s: int = GRACE_S) -> optuna.storages.BaseStorage:
    """Open (and create) the storage named by ``spec``; ConfigError when it cannot be reached."""
    if is_url(spec):
        for attempt in range(CREATE_RETRIES):
            try:
                return _rdb(spec, heartbeat_s, grace_s)
            except CREATION_RACES:  # another worker is creating the tables (or migrating) right now
                if attempt == CREATE_RETRIES - 1:
                    raise
                time.sleep(0.5 + attempt)
            except Exception as err:
                first = mask((str(err).strip().splitlines() or [""])[0])
                raise ConfigError(
                    f"hydra.sweeper.storage: cannot open {redact(spec)}: {type(err).__name__}: {first}"
                ) from err
    path = Path(spec).expanduser().resolve()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    except OSError as err:
        raise ConfigError(f"hydra.sweeper.storage: cannot open the journal file {path}: {err}") from err


def _rdb(url: str, heartbeat_s: int, grace_s: int) -> RDBStorage:
    with warnings.catch_warnings():  # the heartbeat API is marked experimental in Optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(
            with_driver(url),
            heartbeat_interval=heartbeat_s,
            grace_period=grace_s,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
            engine_kwargs={"pool_pre_ping": True},
        )
