"""Shared plumbing of the ``calolab`` sub-commands: config location, resolvers, error reporting.

Every sub-command is a Hydra app over the repository's ``conf/`` folder, plus the folders a user
adds with Hydra's ``--config-dir DIR`` or ``hydra.searchpath=[file://DIR]`` (their options are
listed by :func:`group_options`). :func:`hydra_app` wraps a task function so that a
:class:`~calolab.errors.CalolabError` becomes one line on stderr (``calolab <command>: error:
...``) and a non-zero exit, with the traceback only when ``HYDRA_FULL_ERROR=1`` or
``CALOLAB_VERBOSE=1`` is set, and keeps third-party start-up noise out of the output
(:mod:`calolab.logs`). Resolvers: ``${calolab_root:}`` (the repository) and ``${calolab_tty:}``
(stdout is a terminal: progress bars rather than log lines, :mod:`calolab.progress`).
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from calolab.errors import CalolabError

ROOT_DIR = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT_DIR / "conf"

# calolab runs on clusters without outbound network: no usage telemetry from MLflow
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

if not OmegaConf.has_resolver("calolab_root"):
    OmegaConf.register_new_resolver("calolab_root", lambda: str(ROOT_DIR))
if not OmegaConf.has_resolver("calolab_tty"):
    from calolab.progress import on_terminal

    OmegaConf.register_new_resolver("calolab_tty", on_terminal)

#: Hydra's flags naming an extra config folder, and the override naming more of them
CONFIG_DIR_FLAGS = ("--config-dir", "-cd")
SEARCHPATH_KEY = "hydra.searchpath"


def verbose() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1" or os.environ.get("CALOLAB_VERBOSE") == "1"


def calolab_cause(err: BaseException) -> CalolabError | None:
    """The CalolabError behind ``err`` (itself, or one it was raised from, e.g. by instantiate)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, CalolabError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


#: Hydra's flags whose value is the next argument (kept when a multirun job's command line is rebuilt)
_VALUE_FLAGS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn")
_MULTIRUN_FLAGS = ("-m", "--multirun")
#: what Lightning's DDP launcher leaves in the environment of the process that launched the ranks
_DDP_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "LOCAL_RANK", "PL_GLOBAL_SEED")


def single_run_argv(argv: list[str], task_overrides: list[str], hydra_overrides: list[str]) -> list[str]:
    """The command line that re-runs one job of a multirun as a single run.

    Lightning's DDP launcher starts the other ranks with ``sys.argv`` (plus ``hydra.run.dir=...``):
    in a multirun that would be ``-m`` and every job's overrides, and each rank would start the
    whole multirun (or sweep) again. A job's command line is the program, Hydra's config-folder
    flags, the job's own overrides (a sweep trial's sampled values and its ``+sweep_trial.*``)
    and the ``hydra.searchpath`` given on the command line (users' config folders).
    """
    kept, args = [argv[0]], iter(argv[1:])
    for arg in args:
        if arg in _MULTIRUN_FLAGS:
            continue
        if arg in _VALUE_FLAGS:
            kept += [arg, next(args, "")]
        elif arg.startswith("-"):
            kept.append(arg)
    searchpath = [o for o in hydra_overrides if o.lstrip("+").startswith(SEARCHPATH_KEY)]
    return [*kept, *task_overrides, *searchpath]


#: the multirun's own command line while one of its jobs runs (sys.argv is then the job's alone)
_multirun_argv: list[str] | None = None


def command_line() -> list[str]:
    """The command line this process was started with: within a multirun job, the multirun's
    (``-m`` and the swept values), not the job's own that :func:`multirun_job_as_single_run` sets."""
    return list(_multirun_argv) if _multirun_argv is not None else list(sys.argv)


@contextmanager
def multirun_job_as_single_run() -> Iterator[None]:
    """Within one job of a Hydra multirun (a sweep trial too): DDP ranks re-run this job alone.

    ``sys.argv`` becomes :func:`single_run_argv` and ``hydra.run.dir`` the job's own folder (where
    Lightning puts the other ranks' logs); after the job, argv is given back, the job's process
    group is destroyed (the next job starts new ranks) and Lightning's rendezvous variables are
    reset, so that the next job picks a free port. Outside a multirun it does nothing.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        yield
        return
    global _multirun_argv
    hc = HydraConfig.get()
    saved_argv, saved_env = list(sys.argv), {k: os.environ.get(k) for k in _DDP_VARIABLES}
    _multirun_argv = saved_argv
    sys.argv = single_run_argv(sys.argv, list(hc.overrides.task), list(hc.overrides.hydra))
    with _writable(hc.run):
        hc.run.dir = hc.runtime.output_dir
    try:
        yield
    finally:
        sys.argv, _multirun_argv = saved_argv, None
        _end_process_group()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def _writable(node: DictConfig) -> Iterator[None]:
    from omegaconf import open_dict, read_write

    with read_write(node), open_dict(node):
        yield


def _end_process_group() -> None:
    """Destroy this process's torch.distributed process group, if a DDP job left one."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rename_args(args: list[str], aliases: dict[str, str]) -> list[str]:
    """Command-line arguments with a command's short keys renamed before Hydra sees them
    (``experiment=x`` -> ``experiment_name=x`` for ``calolab promote``); the rest unchanged."""
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        out.append(f"{aliases[key]}={value}" if sep and key in aliases else arg)
    return out


def report_errors(command: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn CalolabError (and KeyboardInterrupt) into one line and an exit code."""

    from omegaconf.errors import MissingMandatoryValue

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from calolab.logs import quiet_third_party

        quiet_third_party()
        try:
            with multirun_job_as_single_run():
                return func(*args, **kwargs)
        except MissingMandatoryValue as err:
            if verbose():
                raise
            key = getattr(err, "full_key", "") or "a required option"
            print(f"calolab {command}: error: {key} is required (calolab {command} {key}=...)", file=sys.stderr)
            sys.exit(2)
        except Exception as err:
            cause = calolab_cause(err)
            if cause is None or verbose():
                raise
            from calolab.secrets import mask  # a URL or secret from a config file never reaches the terminal

            print(f"calolab {command}: error: {mask(str(cause))}", file=sys.stderr)
            sys.exit(cause.exit_code)
        except KeyboardInterrupt:
            print(f"calolab {command}: interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper


def hydra_app(config_name: str, command: str) -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """Decorator: a Hydra main over ``conf/<config_name>.yaml`` with calolab's error reporting."""

    def decorate(task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        return hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)(
            report_errors(command, task)
        )

    return decorate


def compose_config(name: str, overrides: list[str]) -> DictConfig:
    """Compose ``conf/<name>.yaml`` from inside or outside a running Hydra app.

    Inside one, the app's config search path is used, ``--config-dir`` and the command line's
    ``hydra.searchpath`` included, so that a user's own config folders are seen here too.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    if GlobalHydra.instance().is_initialized():
        extra = list(HydraConfig.get().searchpath) if HydraConfig.initialized() else []
        if extra and not any(_searchpath_entries(o) is not None for o in overrides):
            overrides = [*overrides, searchpath_override(extra)]
        return compose(config_name=name, overrides=overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


# -- users' own config folders -----------------------------------------------------------------
def _searchpath_entries(arg: str) -> list[str] | None:
    """The entries of a ``hydra.searchpath=[...]`` override (also with ``+``/``++``), else None."""
    if SEARCHPATH_KEY not in arg.partition("=")[0]:
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        override = OverridesParser.create().parse_override(arg)
    except Exception:  # malformed: Hydra reports it when the command runs
        return None
    value = override.value()
    if override.key_or_group != SEARCHPATH_KEY or not isinstance(value, list):
        return None
    return [str(v) for v in value]


def extra_search_path(args: list[str]) -> list[str]:
    """The config folders a command line adds to ``conf/``, as Hydra search-path entries.

    ``--config-dir DIR`` / ``--config-dir=DIR`` / ``-cd DIR`` (made absolute, as Hydra does) and
    the entries of ``hydra.searchpath=[file://DIR,pkg://module]``, in that order.
    """
    found: list[str] = []
    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if flag in CONFIG_DIR_FLAGS:
            value = value if eq else (args[i + 1] if i + 1 < len(args) else "")
            if value:
                found.append(f"file://{os.path.abspath(value)}")
        elif (entries := _searchpath_entries(arg)) is not None:
            found += entries
    return found


def searchpath_override(entries: list[str]) -> str:
    """``hydra.searchpath=['file:///a','pkg://b']``: each entry quoted for Hydra's override grammar."""
    quoted = ",".join("'" + e.replace("'", "\\'") + "'" for e in entries)
    return f"{SEARCHPATH_KEY}=[{quoted}]"


@contextmanager
def group_options(search_path: list[str]) -> Iterator[Callable[[str], list[str] | None]]:
    """A function giving the options of a config group over ``conf/`` plus ``search_path``.

    ``options("data")`` lists every ``data/*.yaml`` (``conf/data/`` and the user's folders), or
    None when ``data`` is no config group there. Uses Hydra's own config repository, so that
    ``pkg://`` entries, relative ``file://`` folders and Hydra's plugin groups count too.
    """
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType

    overrides = [searchpath_override(search_path)] if search_path else []
    with warnings.catch_warnings():  # a missing folder: Hydra reports it itself when the command runs
        warnings.simplefilter("ignore", UserWarning)
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            loader = GlobalHydra.instance().config_loader()

            def options(group: str) -> list[str] | None:
                parent, _, name = group.rpartition("/")
                groups = loader.get_group_options(parent, results_filter=ObjectType.GROUP, overrides=overrides)
                if name not in groups:
                    return None
                return sorted(loader.get_group_options(group, results_filter=ObjectType.CONFIG, overrides=overrides))

            yield options
