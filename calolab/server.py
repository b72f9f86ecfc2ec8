"""The shared tracking server: one definition of the ``mlflow server`` command for a group.

``make server`` and ``docker/compose.yaml`` both run ``python -m calolab.server``, which builds
and runs this one command (see :func:`server_command`)::

    mlflow server --host H --port P --workers N --serve-artifacts --artifacts-destination D
                  --app-name basic-auth

with the backend store on PostgreSQL (``MLFLOW_BACKEND_STORE_URI``, handed to MLflow through
its own environment variable so that the password does not show in the process list) and
MLflow's basic-auth app on by default, its user database on the same PostgreSQL. Settings come
from the environment, and from an env file (``docker/server.env`` by default, git-ignored; the
committed ``docker/server.env.example`` lists every key without real values); the environment
wins over the file. Before MLflow starts, this module refuses a missing or well-known admin
password, creates the two databases when they are missing, and writes the auth app's ini
(``database_uri``, ``admin_username``; mode 0600 in a private folder removed on exit); the admin
password reaches MLflow only through ``MLFLOW_AUTH_ADMIN_PASSWORD``.

Keys (environment or env file; defaults in brackets):

- ``MLFLOW_BACKEND_STORE_URI``: the tracking database [built from the ``POSTGRES_*`` keys:
  ``postgresql://POSTGRES_USER[:POSTGRES_PASSWORD]@POSTGRES_HOST:POSTGRES_PORT/MLFLOW_DATABASE``
  with user ``postgres``, no password, ``127.0.0.1``, ``5432``, ``mlflow``: the local server]
- ``CALOLAB_AUTH_DATABASE_URI``: the auth app's user database [the same server, database
  ``mlflow_auth``]
- ``MLFLOW_ARTIFACTS_DESTINATION``: where the server keeps artifacts [``mlruns/server-artifacts``]
- ``MLFLOW_HOST`` [127.0.0.1], ``MLFLOW_PORT`` [5000], ``CALOLAB_SERVER_WORKERS`` [2],
  ``MLFLOW_SERVER_ALLOWED_HOSTS`` [MLflow's default: localhost and private addresses]
- ``MLFLOW_AUTH_ADMIN_USERNAME`` [admin], ``MLFLOW_AUTH_ADMIN_PASSWORD`` [required]
- ``MLFLOW_FLASK_SERVER_SECRET_KEY``: the auth app's CSRF key [a random one per start]
- ``CALOLAB_AUTH_CACHE_TTL_S`` [60]: how long a worker trusts a checked password (MLflow's
  ``auth_cache_ttl_seconds``; a password check costs ~0.1-1 s of CPU; 0 checks every request)
- ``CALOLAB_SERVER_AUTH`` [true]: ``false`` runs without authentication (a private machine only)
- ``CALOLAB_SERVER_ENV_FILE`` [docker/server.env]: the env file read
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from calolab.errors import CalolabError, ConfigError

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ENV_FILE = ROOT / "docker" / "server.env"
DEFAULT_ARTIFACTS = ROOT / "mlruns" / "server-artifacts"
#: MLflow's own minimum length of a basic-auth password (``mlflow.utils.validation``)
MIN_PASSWORD_LENGTH = 12
#: passwords anyone would try first: MLflow's old default, the usual ones, this project's names
WELL_KNOWN_PASSWORDS = frozenset(
    {
        "password1234",
        "password",
        "password123",
        "passw0rd",
        "admin",
        "admin123",
        "administrator",
        "calolab",
        "calolab1234",
        "mlflow",
        "mlflow1234",
        "postgres",
        "changeme",
        "change-me",
        "secret",
        "letmein",
        "123456789012",
        "qwertyuiop",
    }
)


class ServerConfigError(ConfigError):
    """The tracking server's settings are missing, unsafe or unusable; it does not start."""


def read_env_file(path: str | os.PathLike) -> dict[str, str]:
    """``KEY=VALUE`` lines of ``path`` (``#`` comments, blank lines, optional quotes); {} if it is absent."""
    path = Path(path)
    if not path.is_file():
        return {}
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep or not key.strip().isidentifier():
            raise ServerConfigError(f"{path}:{number}: expected KEY=VALUE, but got {line!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def with_database(url: str, database: str) -> str:
    """PostgreSQL ``url`` pointing at ``database`` on the same server (query, e.g. ``host=<socket>``, kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def sqlalchemy_url(url: str) -> str:
    """``url`` with the psycopg2 driver named: SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url.removeprefix(prefix)
    return url


def libpq_url(url: str) -> str:
    """``url`` as libpq (psycopg2) reads it: no SQLAlchemy driver suffix."""
    scheme, sep, rest = url.partition("://")
    return f"postgresql://{rest}" if sep and scheme.startswith("postgres") else url


def database_of(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def masked(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def check_admin_password(password: str | None, username: str) -> str:
    """``password`` if it is fit for the admin account, else a :class:`ServerConfigError` saying why."""
    where = "set MLFLOW_AUTH_ADMIN_PASSWORD in the environment or in the env file (see docker/server.env.example)"
    if not password:
        raise ServerConfigError(f"the tracking server needs an admin password: {where}")
    if password.lower() in WELL_KNOWN_PASSWORDS or password.lower() == username.lower():
        raise ServerConfigError(
            f"refusing to start with a well-known admin password ({password!r} is among the first any "
            f"attacker tries); {where} to a long random one, e.g. from `openssl rand -base64 24`"
        )
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ServerConfigError(
            f"the admin password must have at least {MIN_PASSWORD_LENGTH} characters (MLflow's policy), but it "
            f"has {len(password)}; {where}"
        )
    return password


def _flag(value: str, key: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ServerConfigError(f"{key} must be true or false, but got {value!r}")


@dataclass(frozen=True)
class ServerSettings:
    """Everything the server command is built from (see the module docstring for the keys)."""

    backend_uri: str
    auth_uri: str
    artifacts: str
    host: str
    port: int
    workers: int
    allowed_hosts: str | None
    auth: bool
    admin_username: str
    admin_password: str | None
    secret_key: str | None = None
    auth_cache_ttl_s: int = 60

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerSettings:
        """Settings from ``env`` (default: ``os.environ``) over the env file it names (or the default one)."""
        env = dict(os.environ if env is None else env)
        merged = {**read_env_file(env.get("CALOLAB_SERVER_ENV_FILE") or DEFAULT_ENV_FILE), **env}
        get = merged.get
        backend = get("MLFLOW_BACKEND_STORE_URI") or _postgres_url(merged)
        if not backend.startswith(("postgresql://", "postgresql+", "postgres://")):
            raise ServerConfigError(
                f"MLFLOW_BACKEND_STORE_URI must be a postgresql:// URL (the shared server keeps runs in "
                f"PostgreSQL), but got {masked(backend)!r}"
            )
        try:
            port = int(get("MLFLOW_PORT") or 5000)
            workers = int(get("CALOLAB_SERVER_WORKERS") or 2)
            cache_ttl = int(get("CALOLAB_AUTH_CACHE_TTL_S") or 60)
        except ValueError as err:
            raise ServerConfigError(
                f"MLFLOW_PORT, CALOLAB_SERVER_WORKERS and CALOLAB_AUTH_CACHE_TTL_S must be integers: {err}"
            ) from None
        return cls(
            backend_uri=sqlalchemy_url(backend),
            auth_uri=sqlalchemy_url(get("CALOLAB_AUTH_DATABASE_URI") or with_database(backend, "mlflow_auth")),
            artifacts=get("MLFLOW_ARTIFACTS_DESTINATION") or str(DEFAULT_ARTIFACTS),
            host=get("MLFLOW_HOST") or "127.0.0.1",
            port=port,
            workers=workers,
            allowed_hosts=get("MLFLOW_SERVER_ALLOWED_HOSTS") or None,
            auth=_flag(get("CALOLAB_SERVER_AUTH") or "true", "CALOLAB_SERVER_AUTH"),
            admin_username=get("MLFLOW_AUTH_ADMIN_USERNAME") or "admin",
            admin_password=get("MLFLOW_AUTH_ADMIN_PASSWORD") or None,
            secret_key=get("MLFLOW_FLASK_SERVER_SECRET_KEY") or None,
            auth_cache_ttl_s=cache_ttl,
        )

    def check(self) -> None:
        """Refuse unsafe settings before anything starts."""
        if self.auth:
            check_admin_password(self.admin_password, self.admin_username)
        for url in (self.backend_uri, self.auth_uri):
            password = urlsplit(url).password
            if password and password.lower() in WELL_KNOWN_PASSWORDS:
                raise ServerConfigError(
                    f"refusing to start with a well-known database password in {masked(url)} ({password!r}); set "
                    "POSTGRES_PASSWORD (or the URL's) to a long random one"
                )
        if database_of(self.backend_uri) == database_of(self.auth_uri) and self.auth:
            raise ServerConfigError(
                "CALOLAB_AUTH_DATABASE_URI must name another database than MLFLOW_BACKEND_STORE_URI "
                f"(both are {database_of(self.auth_uri)!r})"
            )


def _postgres_url(env: Mapping[str, str]) -> str:
    user = quote(env.get("POSTGRES_USER") or "postgres", safe="")
    password = env.get("POSTGRES_PASSWORD")

    auth = f"{user}:{quote(password, safe='')}" if password else user
    host, port = env.get("POSTGRES_HOST") or "127.0.0.1", env.get("POSTGRES_PORT") or "5432"
    return f"postgresql://{auth}@{host}:{port}/{env.get('MLFLOW_DATABASE') or 'mlflow'}"


def server_command(settings: ServerSettings, executable: str | None = None) -> list[str]:
    """The ``mlflow server`` command line (the backend store URI travels in ``MLFLOW_BACKEND_STORE_URI``)."""
    mlflow = executable or shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    cmd = [mlflow, "server", "--host", settings.host, "--port", str(settings.port)]
    cmd += ["--workers", str(settings.workers)]
    cmd += ["--serve-artifacts", "--artifacts-destination", settings.artifacts]
    if settings.allowed_hosts:
        cmd += ["--allowed-hosts", settings.allowed_hosts]
    if settings.auth:
        cmd += ["--app-name", "basic-auth"]
    return cmd


def auth_ini(settings: ServerSettings) -> str:
    """The basic-auth app's configuration (``MLFLOW_AUTH_CONFIG_PATH``); the admin password is not in it."""
    return (
        "[mlflow]\n"
        "# every signed-in user may read; writing, promoting and managing need a grant from an admin\n"
        "default_permission = READ\n"
        f"database_uri = {settings.auth_uri}\n"
        f"admin_username = {settings.admin_username}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "# a password check (PBKDF2) costs ~0.1-1 s of CPU; without this cache every request pays it. A changed\n"
        "# or deleted password stays usable for at most this long on the workers that did not handle the change\n"
        f"auth_cache_ttl_seconds = {settings.auth_cache_ttl_s}\n"
    )


def ensure_databases(settings: ServerSettings) -> list[str]:
    """Create the backend (and auth) databases on their PostgreSQL servers when missing; their names."""
    import psycopg2
    from psycopg2 import sql

    created = []
    urls = [settings.backend_uri] + ([settings.auth_uri] if settings.auth else [])
    for url in urls:
        dsn = libpq_url(url)
        name = database_of(dsn)
        try:
            psycopg2.connect(dsn, connect_timeout=5).close()
            continue
        except psycopg2.OperationalError as err:
            if f'database "{name}" does not exist' not in str(err):
                raise ServerConfigError(f"cannot connect to PostgreSQL at {masked(url)}: {str(err).strip()}") from None
        try:
            conn = psycopg2.connect(with_database(dsn, "postgres"), connect_timeout=5)
        except psycopg2.OperationalError as err:
            raise ServerConfigError(
                f"database {name!r} does not exist and the maintenance database 'postgres' of {masked(url)} "
                f"cannot be reached to create it: {str(err).strip()}"
            ) from None
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg2.errors.DuplicateDatabase:
            pass  # created meanwhile by another start
        except psycopg2.Error as err:
            raise ServerConfigError(f"cannot create database {name!r} at {masked(url)}: {str(err).strip()}") from None
        finally:
            conn.close()
        created.append(name)
    return created


def run(settings: ServerSettings) -> int:
    """Check, create the databases, write the auth ini, run ``mlflow server`` until it ends; its exit code."""
    settings.check()
    Path(settings.artifacts).mkdir(parents=True, exist_ok=True) if "://" not in settings.artifacts else None
    for name in ensure_databases(settings):
        print(f"calolab server: created database {name!r}", flush=True)
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": settings.backend_uri}
    # MLflow's job runner serves GenAI features (scorers, prompt optimisation) calolab does not use; off
    # unless asked for, it spares a process, seconds of start-up and the wait for it at shutdown
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    private = Path(tempfile.mkdtemp(prefix="calolab-server-"))  # mode 0700
    try:
        if settings.auth:
            ini = private / "basic_auth.ini"
            ini.touch(mode=0o600)
            ini.write_text(auth_ini(settings))
            env.update(
                # the CSRF key of the auth app's forms: the user's, or one per start shared by its workers
                MLFLOW_FLASK_SERVER_SECRET_KEY=settings.secret_key or secrets.token_urlsafe(32),
                MLFLOW_AUTH_CONFIG_PATH=str(ini),
                MLFLOW_AUTH_ADMIN_USERNAME=settings.admin_username,
                MLFLOW_AUTH_ADMIN_PASSWORD=settings.admin_password or "",
            )
        else:
            print("calolab server: WARNING: authentication is off (CALOLAB_SERVER_AUTH=false)", flush=True)
        cmd = server_command(settings)
        print(
            f"calolab server: {' '.join(cmd)}  (backend store {masked(settings.backend_uri)}"
            + (f", users in {masked(settings.auth_uri)})" if settings.auth else ")"),
            flush=True,
        )
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)

        def forward(signum, _frame):  # to MLflow and the workers it started
            try:
                os.killpg(proc.pid, signum)
            except ProcessLookupError:
                pass

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, forward)
        return proc.wait()
    finally:
        shutil.rmtree(private, ignore_errors=True)


def main() -> None:
    try:
        code = run(ServerSettings.from_env())
    except CalolabError as err:
        print(f"calolab server: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    sys.exit(code)


if __name__ == "__main__":
    main()
