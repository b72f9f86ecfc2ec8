"""calolab's exception hierarchy: one base class, turned into one clear line by the CLI.

Every error calolab raises on purpose derives from :class:`CalolabError`. The command line
catches it, prints ``calolab: error: <message>`` and exits non-zero; the traceback is shown only
with ``HYDRA_FULL_ERROR=1`` or ``CALOLAB_VERBOSE=1``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any


class CalolabError(Exception):
    """Base of every error calolab raises on purpose."""

    exit_code = 2


class ConfigError(CalolabError, ValueError):
    """A configuration value is out of range or inconsistent."""


class InputFileError(CalolabError, OSError):
    """An input or output file is missing, unreadable, unwritable or malformed."""


class KeyInFileError(CalolabError, KeyError):
    """A tree or branch is missing from a file; names the file and the closest names.

    Modelled on uproot's ``KeyInFileError``: the message names what was asked for, where, and
    suggests close matches among what is there.
    """

    def __init__(self, key: str, *, file: str, where: str = "", available: Iterable[str] = ()):
        self.key, self.file, self.where = key, file, where
        self.available = sorted(available)
        super().__init__(key)

    def __str__(self) -> str:
        place = f"{self.file}:{self.where}" if self.where else self.file
        msg = f"{self.key!r} not found in {place}"
        close = difflib.get_close_matches(self.key, self.available, n=3, cutoff=0.5)
        if close:
            msg += f"; did you mean {', '.join(repr(c) for c in close)}?"
        elif self.available:
            shown = ", ".join(self.available[:12]) + (" ..." if len(self.available) > 12 else "")
            msg += f"; available: {shown}"
        return msg


class GenerationError(CalolabError, RuntimeError):
    """The event generator could not be configured or failed while running."""


def check_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    allow_none: bool = False,
) -> float | None:
    """``value`` as a float, or a ConfigError naming ``name``: it must be a finite number (not a
    bool or a numeric string), ``>= low`` (``> low`` with ``low_open``) and ``<= high``; None passes with
    ``allow_none``. The one range check of constructor arguments and settings."""
    if value is None and allow_none:
        return None
    try:
        # numbers only: a numeric string would pass float() but stay a string where it is kept
        x = math.nan if isinstance(value, (str, bytes, bool)) else float(value)
    except (TypeError, ValueError):
        x = math.nan
    if not math.isfinite(x):
        raise ConfigError(f"{name} must be a finite number, but got {value!r}")
    if low is not None and (x <= low if low_open else x < low):
        raise ConfigError(f"{name} must be {'>' if low_open else '>='} {low:g}, but got {value!r}")
    if high is not None and x > high:
        raise ConfigError(f"{name} must be <= {high:g}, but got {value!r}")
    return x


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return a ``; did you mean ...?`` suffix for ``name`` among ``choices`` (or "")."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


class ExportError(CalolabError, RuntimeError):
    """A trained net could not be exported, or the exported model does not reproduce it."""
