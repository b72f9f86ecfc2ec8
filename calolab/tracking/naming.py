"""Run names that say what a run is and never repeat: experiment, overrides, time, random suffix.

MLflow names an unnamed run from Python's global ``random``, which calolab seeds before the run
starts, so every run would get the same name. calolab names runs itself instead:
``<experiment>[-trial-<n>][-<overrides>]-<yyyymmdd-hhmmss>-<suffix>``, e.g.
``photon_id-lr=0.0003,debug=smoke-20250612-143005-k3f9``. The overrides are the job's
command-line overrides minus those that only say where things go (paths, tracking, Hydra's own,
the sweep's hand-off keys), those a multirun sweeps over first, with keys shortened to the last
part that tells them apart; a sweep trial is named after its number and sampled values
(``photon_id-trial-3-lr=0.000423,dropout=0.12-...``). The suffix comes from the operating
system's randomness, independent of any seed, so that two jobs started in the same second
differ.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Collection, Sequence
from datetime import datetime

from calolab.tracking.hydra_job import current_hydra, is_multirun, task_overrides

#: override keys (or their first part) that say where things go, not what the run is
NOISE_KEYS = (
    "experiment",
    "experiment_name",
    "experiment_description",
    "run_name",
    "paths",
    "tracking",
    "hydra",
    "sweep",
    "sweep_trial",
    "data.files",
    "data.cache_dir",
    "data.num_workers",
    "generate.out",
    "generate.chunk_size",
    "generate.workers",
    "trainer.enable_progress_bar",
)
#: longest overrides part of a name, and longest single value (characters)
MAX_OVERRIDES_LENGTH = 60
MAX_VALUE_LENGTH = 20
SUFFIX_ALPHABET = string.ascii_lowercase + string.digits


def run_name(
    experiment: str,
    *,
    trial: int | None = None,
    overrides: Sequence[str] | None = None,
    now: datetime | None = None,
) -> str:
    """A unique, readable run name.

    Args:
        experiment: the experiment (preset) name.
        trial: the sweep trial number, if the run is a trial.
        overrides: command-line overrides; the running Hydra job's when None.
        now: the time in the name (default: now, local time).
    """
    parts = [experiment]
    if trial is not None:
        parts.append(f"trial-{trial}")
    if overrides is None:
        overrides, first = task_overrides(), swept_keys()
    else:
        first = set()
    from calolab.secrets import mask  # a credential typed as an override never names a run

    summary = describe_overrides([mask(o) for o in overrides], first=first)
    if summary:
        parts.append(summary)
    parts.append((now or datetime.now()).strftime("%Y%m%d-%H%M%S"))
    parts.append("".join(secrets.choice(SUFFIX_ALPHABET) for _ in range(4)))
    return "-".join(parts)


def describe_overrides(overrides: Sequence[str], first: Collection[str] = ()) -> str:
    """``lr=3e-4,debug=smoke``: the overrides that say what the run is, shortened.

    Args:
        overrides: command-line overrides as typed.
        first: keys to name first (those a multirun sweeps over: what differs between its runs).
    """
    items: list[tuple[str, str | None]] = []
    for line in overrides:
        parsed = _split(line)
        if parsed is None:
            continue
        key, value = parsed
        if _is_noise(key):
            continue
        items.append((key, value))
    items.sort(key=lambda item: item[0] not in first)  # stable: command-line order otherwise
    texts = []
    for key, value in items:
        name = _short_key(key, [k for k, _ in items])
        texts.append(f"~{name}" if value is None else f"{name}={value}")
    out = ""
    for i, text in enumerate(texts):
        candidate = f"{out},{text}" if out else text
        if len(candidate) > MAX_OVERRIDES_LENGTH:
            return f"{out},+{len(texts) - i}" if out else text[: MAX_OVERRIDES_LENGTH - 1] + "~"
        out = candidate
    return out


def swept_keys(argv: Sequence[str] | None = None) -> set[str]:
    """Keys the command line sweeps over (``lr=1e-3,3e-4``, ``x=range(1,4)``) in a multirun.

    A Hydra job does not keep the multirun's own arguments, but the process that runs the jobs
    (the basic launcher's) still has them in ``sys.argv``; elsewhere (a submitit job's process)
    none are found and the overrides keep their command-line order.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if argv is None:
        hydra = current_hydra()
        if hydra is None or not is_multirun(hydra.get("mode")):
            return set()
        from calolab.app import command_line  # the multirun's, also while a job runs

        argv = command_line()[1:]
    parser = OverridesParser.create()
    keys = set()
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            (override,) = parser.parse_overrides([arg])
        except Exception:  # not an override (a flag's value): skip it
            continue
        if override.is_sweep_override():
            keys.add(override.key_or_group)
    return keys


def _short_key(key: str, keys: Sequence[str]) -> str:
    """The shortest tail of ``key`` (``lr``, ``optimizer.lr``, ...) that no other key ends with."""
    parts = key.replace("/", ".").split(".")
    others = [k.replace("/", ".").split(".") for k in keys if k != key]
    for n in range(1, len(parts) + 1):
        tail = parts[-n:]
        if not any(o[-n:] == tail for o in others):
            return ".".join(tail)
    return key


def _split(line: str) -> tuple[str, str | None] | None:
    """``(key, value)`` of one override as typed (value None for a deletion ``~key``)."""
    line = line.strip()
    if not line:
        return None
    key, eq, value = line.partition("=")
    key = key.lstrip("+~").partition("@")[0]
    if line.startswith("~") and not eq:
        return key, None
    if not eq:
        return None
    return key, _short_value(value)


def _short_value(value: str) -> str:
    value = value.strip().strip("'\"")
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if len(value) > 8 and not value.lstrip("+-").isdigit():
            value = f"{number:.3g}"  # an Optuna-sampled 0.000423178291 -> 0.000423
    value = " ".join(value.split())
    return value if len(value) <= MAX_VALUE_LENGTH else value[: MAX_VALUE_LENGTH - 1] + "~"


def _is_noise(key: str) -> bool:
    key = key.replace("/", ".")
    return any(key == n or key.startswith(n + ".") for n in NOISE_KEYS)
