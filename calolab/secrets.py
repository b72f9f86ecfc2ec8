"""Credentials: where calolab takes them from, and how it keeps them out of everything it writes.

calolab itself never holds a password in a config. A tracking server's credentials come from
MLflow's own variables (``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` or
``MLFLOW_TRACKING_TOKEN``) or MLflow's credentials file (``~/.mlflow/credentials``); a
PostgreSQL password (an Optuna storage, a tracking database) from libpq's own places
(``~/.pgpass``, ``PGPASSFILE``, ``PGPASSWORD``), which psycopg2, and so MLflow, Optuna and the
promotion lock, read by themselves.

A password typed into a URL on the command line (``hydra.sweeper.storage=postgresql://u:pw@h/db``)
is taken out before Hydra sees the command line (:func:`strip_arguments`): the URL goes on as
``postgresql://u@h/db`` and the password to a private pgpass file (mode 0600, under
``~/.cache/calolab/secrets`` or ``$CALOLAB_SECRETS_DIR``, removed when the command ends) named by
``PGPASSFILE``, which every process the command starts inherits (DDP ranks, launcher jobs on
other hosts that share the home directory). A URL that reaches calolab another way (a config
file) gets the same treatment where calolab hands it on (:func:`stash`, the sweep's trial
hand-off). A user name or password in an ``http(s)://`` URL is refused in one line that names
MLflow's variables; so is a password in a URL of any other kind of database.

What is written anyway goes through :func:`mask`: the user information of every URL and the
value of every known secret (the variables above, the password of ``$MLFLOW_TRACKING_URI``,
MLflow's credentials file, the passwords stashed by this process or its parent) become ``***``.
"""

from __future__ import annotations

import atexit
import configparser
import os
import re
import secrets as _random
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from hydra.experimental.callback import Callback as _HydraCallback

from calolab.errors import ConfigError
from calolab.procs import pid_alive

MASK = "***"
#: environment variables whose values are secrets (MLflow's, libpq's)
SECRET_VARIABLES = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "PGPASSWORD")
#: environment variables holding a URL whose password is a secret
URL_VARIABLES = ("MLFLOW_TRACKING_URI",)
#: config keys (the last part of a dotted path, any case) that hold a credential as their value
CREDENTIAL_KEYS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "api_token",
        "access_token",
        "auth_token",
        "access_key",
        "secret_key",
        "secret_access_key",
        "client_secret",
        "private_key",
        "credentials",
    }
)
#: a secret shorter than this is masked only where a whole value equals it, not inside text
#: (masking "test" would mangle every "test/auc")
MIN_MASKED_LENGTH = 6
#: scheme:// then the user information (greedy up to the last '@' before the path)
URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/?#\s'\"]*)@")
#: ``<dotted key>=<value>`` (an override, a log line) whose last key part may be a credential field
CREDENTIAL_OVERRIDE = re.compile(r"(?<![\w.])(?P<key>[+~]{0,2}(?:[\w-]+\.)*(?P<name>\w+))=(?P<value>[^\s,'\"\])]+)")
#: a URL runs to the first blank, quote, comma or closing bracket (an override's list or string)
URL_END = re.compile(r"[^\s'\",\])]+")
POSTGRES_SCHEME = re.compile(r"^postgres(ql)?(\+[a-z0-9_]+)?$", re.IGNORECASE)
HTTP_SCHEMES = ("http", "https")
#: where stashed passwords go; the default is under the home directory, which the nodes of a
#: cluster share, so that launcher jobs on other hosts find the file
SECRETS_DIR_VARIABLE = "CALOLAB_SECRETS_DIR"
DEFAULT_SECRETS_DIR = "~/.cache/calolab/secrets"
PASSFILE_PREFIX = "pgpass-"
CREDENTIALS_FILE = "~/.mlflow/credentials"

_stashed: list[tuple[str, str, str, str]] = []  # (host, port, user, password) entries of this process
_passfile: Path | None = None
_previous_passfile_text = ""
_file_cache: dict[str, tuple[float, list[str]]] = {}


# -- masking ----------------------------------------------------------------------------------
def mask(text: str) -> str:
    """``text`` with every URL's user information and every known secret replaced by ``***``.

    A database URL's user name alone (``postgresql://optuna@host/db``, no password) is kept: it
    is no secret, and the URL stays usable. In an ``http(s)://`` URL anything before the ``@``
    may be a token, so it is masked whole.
    """
    text = URL_USERINFO.sub(_mask_userinfo, str(text))
    text = CREDENTIAL_OVERRIDE.sub(_mask_override, text)
    for secret in known_secrets():
        if len(secret) >= MIN_MASKED_LENGTH:
            text = text.replace(secret, MASK)
    return text


def _mask_override(m: re.Match) -> str:
    return f"{m.group('key')}={MASK}" if m.group("name").lower() in CREDENTIAL_KEYS else m.group(0)


def _mask_userinfo(m: re.Match) -> str:
    scheme, userinfo = m.group("scheme"), m.group("userinfo")
    if ":" not in userinfo and scheme[:-3].lower() not in HTTP_SCHEMES:
        return m.group(0)
    return f"{scheme}{MASK}@"


def mask_value(key: str, value: Any) -> Any:
    """A config value as it may be recorded under ``key``: credentials masked, the rest as is.

    The key itself always stays (a hyper-parameter called ``token_dim`` is a hyper-parameter);
    the value is masked when the key is a credential field (``password``, ``token``, ...), when
    it equals a known secret, or, for text, where it contains one (:func:`mask`).
    """
    name = str(key).rpartition(".")[2].lower()
    if name in CREDENTIAL_KEYS and value not in (None, ""):
        return MASK
    if isinstance(value, str):
        return MASK if value in known_secrets() else mask(value)
    return value


def mask_config(obj: Any, key: str = "") -> Any:
    """:func:`mask_value` through a plain container (dicts, lists) of config values."""
    if isinstance(obj, Mapping):
        return {k: mask_config(v, str(k)) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [mask_config(v, key) for v in obj]
    return mask_value(key, obj)


def known_secrets() -> set[str]:
    """The secrets this process knows of, to be masked wherever they would be written."""
    found = {os.environ.get(name, "") for name in SECRET_VARIABLES}
    for name in URL_VARIABLES:
        found.update(p for _, p in url_passwords(os.environ.get(name, "")))
    found.update(entry[3] for entry in _stashed)
    passfile = os.environ.get("PGPASSFILE", "")
    if passfile and Path(passfile).name.startswith(PASSFILE_PREFIX):  # a calolab pgpass file (ours or a parent's)
        found.update(_cached(passfile, _passfile_passwords))
    found.update(_cached(os.path.expanduser(CREDENTIALS_FILE), _credentials_file_passwords))
    found.discard("")
    return found


def _cached(path: str, read) -> list[str]:
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return []
    hit = _file_cache.get(path)
    if hit is None or hit[0] != mtime:
        try:
            hit = (mtime, read(Path(path)))
        except (OSError, configparser.Error, UnicodeDecodeError):
            hit = (mtime, [])
        _file_cache[path] = hit
    return hit[1]


def _passfile_passwords(path: Path) -> list[str]:
    out = []
    for line in path.read_text().splitlines():
        fields = re.split(r"(?<!\\):", line, maxsplit=4)
        if len(fields) == 5 and not line.startswith("#"):
            out.append(fields[4].replace("\\:", ":").replace("\\\\", "\\"))
    return out


def _credentials_file_passwords(path: Path) -> list[str]:
    parser = configparser.ConfigParser()
    parser.read(path)
    return [parser["mlflow"].get("mlflow_tracking_password", "")] if "mlflow" in parser else []


def url_passwords(text: str) -> list[tuple[str, str]]:
    """``(scheme, password)`` of every URL in ``text`` whose user information holds a password
    (raw and percent-decoded)."""
    out = []
    for m in URL_USERINFO.finditer(text or ""):
        user, sep, password = m.group("userinfo").partition(":")
        if sep and password:
            scheme = m.group("scheme")[:-3]
            out += [(scheme, password), (scheme, unquote(password))]
    return out


# -- taking passwords out of URLs ----------------------------------------------------------------
def stash(text: str, *, option: str = "the URL") -> str:
    """``text`` (a URL, or an override holding URLs) with every password taken out of its URLs,
    each handed to libpq through this process's pgpass file (PostgreSQL); unchanged when it
    holds none.

    Raises:
        ConfigError: user information in an ``http(s)://`` URL (MLflow's variables are the
            place for it), or a password in a URL of another kind of database.
    """
    return URL_USERINFO.sub(lambda m: _stash_one(m, text, option), text)


def _stash_one(match: re.Match, text: str, option: str) -> str:
    scheme = match.group("scheme")[:-3]
    url = URL_END.match(text, match.start()).group(0)
    user, sep, password = match.group("userinfo").partition(":")
    if scheme.lower() in HTTP_SCHEMES:
        raise ConfigError(
            f"{option}: a user name or password in the URL would be recorded with every run; set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN, or "
            f"{CREDENTIALS_FILE}) instead, but got {option}={mask(url)}"
        )
    if not sep:
        return match.group(0)  # a user name alone is no secret
    if not POSTGRES_SCHEME.match(scheme):
        raise ConfigError(
            f"{option}: a password in a {scheme}:// URL would be recorded with every run; give it through "
            f"the database client's own option file, but got {option}={mask(url)}"
        )
    password = unquote(password)
    pgpassword = os.environ.get("PGPASSWORD")
    if pgpassword and pgpassword != password:
        raise ConfigError(
            f"{option}: PGPASSWORD is set and would be used instead of the password in the URL; unset one "
            f"of them, but got {option}={mask(url)}"
        )
    host, port = _host_port(url)
    _add_entry((host, port, unquote(user) or "*", password))
    return f"{match.group('scheme')}{user}@"


def strip_arguments(args: Iterable[str]) -> list[str]:
    """Command-line overrides with every password taken out of their URLs (:func:`stash`), and
    ``$MLFLOW_TRACKING_URI`` likewise; before Hydra composes, logs or saves anything."""
    out = []
    for arg in args:
        if "://" in arg and "@" in arg and not arg.startswith("-"):
            key = arg.partition("=")[0].lstrip("+~") if "=" in arg else "an argument"
            arg = stash(arg, option=key)
        out.append(arg)
    for name in URL_VARIABLES:
        value = os.environ.get(name)
        if value and "@" in value:
            os.environ[name] = stash(value, option=name)
    return out


def _host_port(url: str) -> tuple[str, str]:
    """Host (or socket folder) and port of a PostgreSQL URL as libpq matches them in a pgpass file."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return "*", "*"
    host = parsed.host or str(parsed.query.get("host") or "") or "*"
    port = parsed.port or parsed.query.get("port") or "*"
    return str(host), str(port)


def _escape(field: str) -> str:
    return field.replace("\\", "\\\\").replace(":", "\\:")


def _add_entry(entry: tuple[str, str, str, str]) -> None:
    """Add ``(host, port, user, password)`` for any database to this process's pgpass file."""
    global _passfile, _previous_passfile_text
    if entry in _stashed:
        return
    _stashed.insert(0, entry)
    if _passfile is None:
        _previous_passfile_text = _read_user_passfile()
        _passfile = _new_passfile()
        os.environ["PGPASSFILE"] = str(_passfile)
    lines = []
    for host, port, user, password in _stashed:
        hosts = [host, "localhost"] if host.startswith("/") else [host]  # a socket folder; libpq may say localhost
        lines += [":".join([_escape(h), _escape(port), "*", _escape(user), _escape(password)]) for h in hosts]
    text = "\n".join(lines) + "\n" + _previous_passfile_text
    fd = os.open(_passfile, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _read_user_passfile() -> str:
    """The user's own pgpass file (kept behind calolab's entries, so that it still counts)."""
    path = Path(os.environ.get("PGPASSFILE") or os.path.expanduser("~/.pgpass"))
    try:
        text = path.read_text()
    except OSError:
        return ""
    return text if text.endswith("\n") or not text else text + "\n"


def secrets_dir() -> Path:
    return Path(os.environ.get(SECRETS_DIR_VARIABLE) or os.path.expanduser(DEFAULT_SECRETS_DIR))


def _new_passfile() -> Path:
    """A fresh 0600 file in a 0700 folder, removed when this process exits; the files of dead
    processes of this host are removed on the way."""
    folder = secrets_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    host = socket.gethostname().replace("-", "_")
    for old in folder.glob(f"{PASSFILE_PREFIX}{host}-*"):
        pid = old.name.split("-")[2]
        if pid.isdigit() and not pid_alive(int(pid)):
            old.unlink(missing_ok=True)
    path = folder / f"{PASSFILE_PREFIX}{host}-{os.getpid()}-{_random.token_hex(4)}"
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    atexit.register(_remove_passfile, path, os.getpid())
    return path


def _remove_passfile(path: Path, pid: int) -> None:
    if os.getpid() == pid:  # not in a forked child (a DataLoader worker) that inherited the hook
        path.unlink(missing_ok=True)


# -- Hydra's own files --------------------------------------------------------------------------
#: a YAML line ``<credential key>: <value>``
CREDENTIAL_LINE = re.compile(
    r"^(?P<lead>[ \t]*(- )?(?P<key>[A-Za-z_]\w*)[ \t]*:[ \t]+)(?P<value>[^\s#{\[].*?)[ \t]*$", re.MULTILINE
)


def mask_yaml_text(text: str) -> str:
    """Hydra's saved YAML with credentials masked: :func:`mask`, and the value of every
    ``<credential key>: <value>`` line."""

    def line(m: re.Match) -> str:
        if m.group("key").lower() in CREDENTIAL_KEYS and m.group("value") not in ("null", "''", '""'):
            return f"{m.group('lead')}{MASK}"
        return m.group(0)

    return CREDENTIAL_LINE.sub(line, mask(text))


def mask_files(paths: Iterable[Path]) -> None:
    """Rewrite each existing file with :func:`mask_yaml_text` applied (unchanged files are left)."""
    for path in paths:
        try:
            text = path.read_text()
        except OSError:
            continue
        masked = mask_yaml_text(text)
        if masked != text:
            path.write_text(masked)


class MaskSavedConfig(_HydraCallback):
    """Hydra callback (``hydra.callbacks.mask_secrets`` in ``conf/hydra/default.yaml``): masks
    credentials in the files Hydra saved for the job (``.hydra/config.yaml``, ``hydra.yaml``,
    ``overrides.yaml``) and in a multirun's ``multirun.yaml``, right after Hydra wrote them and
    before the job runs. The command line keeps typed passwords away from Hydra altogether
    (:func:`strip_arguments`); this catches what comes from config files."""

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        hydra = config.hydra
        if hydra.output_subdir is not None:
            mask_files(sorted((Path(hydra.runtime.output_dir) / str(hydra.output_subdir)).glob("*.yaml")))
        self.on_multirun_end(config)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = config.hydra.sweep.get("dir") if "sweep" in config.hydra else None
        if sweep_dir:
            mask_files([Path(str(sweep_dir)) / "multirun.yaml"])
