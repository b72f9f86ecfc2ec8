"""The ``calolab`` console script: dispatches ``calolab <command> [hydra overrides]``.

Each command is a Hydra app over ``conf/``; everything after the command name is handed to
Hydra unchanged (overrides, ``-m``, ``--cfg job``, ``--info``, shell completion).
"""

from __future__ import annotations

import importlib
import sys

from calolab.errors import suggest

COMMANDS = {
    "generate": ("calolab.commands.generate", "generate a sample: Pythia 8 + detector -> ROOT ntuples"),
    "train": ("calolab.commands.train", "train an experiment (-m: sweep), evaluate, export, track in MLflow"),
    "evaluate": ("calolab.commands.evaluate", "re-run the test evaluation of a tracked run"),
    "export": ("calolab.commands.export", "re-export a tracked run to ONNX (parity-checked)"),
    "promote": ("calolab.commands.promote", "promote a run via the MLflow model registry (champion / challenger)"),
    "registry": ("calolab.commands.registry", "list registered models, versions, aliases and key metrics"),
}

USAGE = "usage: calolab <command> [overrides ...]\n\ncommands:\n" + "\n".join(
    f"  {name:<10} {doc}" for name, (_, doc) in COMMANDS.items()
)


def check_group_choices(overrides: list[str]) -> str | None:
    """One-line error for ``group=option`` overrides naming an option that has no config file."""
    from calolab.app import CONF_DIR

    for item in overrides:
        if "=" not in item or item.startswith("-"):
            continue
        key, _, value = item.partition("=")
        key = key.lstrip("+~")
        group = CONF_DIR / key
        if "/" in value or "," in value or not value or not group.is_dir() or value == "null":
            continue
        options = sorted(p.stem for p in group.glob("*.yaml"))
        if value not in options:
            return f"unknown {key} {value!r}{suggest(value, options)} (options: {', '.join(options)})"
    return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"calolab: error: unknown command {command!r}{suggest(command, COMMANDS)}\n\n{USAGE}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    aliased = getattr(module, "ARG_ALIASES", {})  # keys a command renames before Hydra sees them
    problem = check_group_choices([a for a in rest if a.partition("=")[0] not in aliased])
    if problem:
        print(f"calolab {command}: error: {problem}", file=sys.stderr)
        return 2
    sys.argv = [f"calolab {command}", *rest]
    module.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
