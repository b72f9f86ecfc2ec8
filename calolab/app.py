"""Shared plumbing of the ``calolab`` sub-commands: config location, resolvers, error reporting.

Every sub-command is a Hydra app over the repository's ``conf/`` folder. :func:`hydra_app`
wraps a task function so that a :class:`~calolab.errors.CalolabError` becomes one line on
stderr (``calolab <command>: error: ...``) and a non-zero exit, with the traceback only when
``HYDRA_FULL_ERROR=1`` or ``CALOLAB_VERBOSE=1`` is set.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
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


def report_errors(command: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn CalolabError (and KeyboardInterrupt) into one line and an exit code."""

    from omegaconf.errors import MissingMandatoryValue

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
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
            print(f"calolab {command}: error: {cause}", file=sys.stderr)
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
    """Compose ``conf/<name>.yaml`` from inside or outside a running Hydra app."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose(config_name=name, overrides=overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)
