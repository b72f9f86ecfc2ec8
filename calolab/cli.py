"""The ``calolab`` console script: dispatches ``calolab <command> [hydra overrides]``.

Each command is a Hydra app over ``conf/``; everything after the command name is handed to
Hydra unchanged (overrides, ``-m``, ``--cfg job``, ``--info``, ``--config-dir DIR``,
``hydra.searchpath=[file://DIR]``). Before that, passwords are taken out of the URLs on the
command line (:func:`calolab.secrets.strip_arguments`), and ``group=option`` overrides naming no
config file are refused in one line that lists the options of ``conf/`` and of the user's extra
folders.
Shell completion (``eval "$(calolab -sc install=bash)"``, also ``zsh``/``fish``) completes the
command names, then each command's overrides through Hydra, the extra folders included.
"""

from __future__ import annotations

import importlib
import os
import sys

from calolab.errors import suggest

COMMANDS = {
    "generate": ("calolab.commands.generate", "generate a sample: Pythia 8 + detector -> ROOT ntuples"),
    "train": ("calolab.commands.train", "train an experiment (-m: sweep), evaluate, export, track in MLflow"),
    "evaluate": ("calolab.commands.evaluate", "re-run the test evaluation of a tracked run"),
    "export": ("calolab.commands.export", "re-export a tracked run to ONNX (parity-checked)"),
    "promote": ("calolab.commands.promote", "promote a run via the MLflow model registry (champion / challenger)"),
    "registry": ("calolab.commands.registry", "list registered models, versions, aliases and key metrics"),
    "sample": ("calolab.commands.sample", "generate jet images with a trained generator into a ROOT file"),
}

USAGE = (
    "usage: calolab <command> [overrides ...]\n\ncommands:\n"
    + "\n".join(f"  {name:<10} {doc}" for name, (_, doc) in COMMANDS.items())
    + "\n\nyour own configs: calolab <command> --config-dir DIR ...  (DIR/data/my_data.yaml -> data=my_data)"
    + '\nshell completion: eval "$(calolab -sc install=bash)"'
)
#: Hydra's shell-completion flag
COMPLETION_FLAGS = ("-sc", "--shell-completion")
#: characters of a value that make it a sweep, an interpolation or a path rather than one option
NOT_AN_OPTION = set("/,()[]{}$*:")


def check_group_choices(args: list[str]) -> str | None:
    """One-line error for ``group=option`` overrides naming an option that has no config file.

    Options are looked up in ``conf/`` and in the folders the command line adds
    (``--config-dir``, ``hydra.searchpath``); with ``--config-path`` Hydra alone decides.
    """
    from calolab.app import extra_search_path, group_options

    choices = []
    for item in args:
        if "=" not in item or item.startswith("-"):
            continue
        key, _, value = item.partition("=")
        key = key.lstrip("+~").partition("@")[0]
        if not value or value == "null" or NOT_AN_OPTION & set(value) or "." in key:
            continue
        choices.append((key, value))
    if not choices or any(a in ("--config-path", "-cp") or a.startswith("--config-path=") for a in args):
        return None
    search_path = extra_search_path(args)
    for entry in search_path:
        folder = entry.removeprefix("file://")
        if entry.startswith("file://") and not os.path.isdir(folder):
            return f"config folder {os.path.abspath(folder)} (--config-dir / hydra.searchpath) is not a directory"
    with group_options(search_path) as options_of:
        for key, value in choices:
            options = options_of(key)
            if options is not None and value not in options:
                return f"unknown {key} {value!r}{suggest(value, options)} (options: {', '.join(options)})"
    return None


def complete(args: list[str]) -> int:
    """``calolab -sc install=bash|zsh|fish`` and the ``-sc query=...`` the installed script runs."""
    action, _, shell = (args[0] if args else "").partition("=")
    if action != "query":  # install / uninstall: Hydra's script, registered for `calolab`
        return _run("train", ["-sc", *args], prog="calolab")
    line = os.environ.get("COMP_LINE", "")
    words = line.split()[1:]  # after `calolab`
    if not words or (len(words) == 1 and not line.endswith(" ")):
        prefix = words[0] if words else ""
        print(("\n" if shell == "fish" else " ").join(c for c in COMMANDS if c.startswith(prefix)))
        return 0
    command = words[0]
    if command not in COMMANDS:
        return 0
    rest = line.split(command, 1)[1]
    module = importlib.import_module(COMMANDS[command][0])
    lead = []
    actions = getattr(module, "ACTIONS", None)  # `calolab registry list ...`
    if actions:
        action_words = rest.split()
        if not action_words or (len(action_words) == 1 and not rest.endswith(" ")):
            prefix = action_words[0] if action_words else ""
            print(("\n" if shell == "fish" else " ").join(a for a in actions if a.startswith(prefix)))
            return 0
        lead = [action_words[0]]
        rest = rest.split(action_words[0], 1)[1]
    # Hydra completes from COMP_LINE, but reads --config-dir from its own arguments only
    os.environ["COMP_LINE"] = f"calolab{rest}"
    os.environ["COMP_POINT"] = str(len(os.environ["COMP_LINE"]))
    words = rest.split()
    dirs = [
        w.split("=", 1)[1] if "=" in w else (words[i + 1] if i + 1 < len(words) else "")
        for i, w in enumerate(words)
        if w.partition("=")[0] in ("--config-dir", "-cd")
    ]
    extra = [a for d in dirs if os.path.isdir(d) for a in ("--config-dir", d)]
    return _run(command, [*lead, "-sc", *args, *extra], prog="calolab")


#: module names of calolab's own entry points (``python -m calolab``, ``python -m calolab.cli``)
ENTRY_MODULES = ("calolab", "calolab.__main__", "calolab.cli")


def _run(command: str, args: list[str], prog: str | None = None) -> int:
    module = importlib.import_module(COMMANDS[command][0])
    sys.argv = [prog or f"calolab {command}", *args]  # Hydra's messages name the program `calolab train`
    _reexecute_as(module.__name__)
    module.main()
    return 0


def _reexecute_as(module_name: str) -> None:
    """Make a re-execution of this process run ``python -m <module_name> <sys.argv[1:]>``.

    Lightning's DDP subprocess launcher starts the other ranks by re-running the main module:
    ``python -m <__main__.__spec__.name> <sys.argv[1:]>``, or ``python <sys.argv[0]> ...`` when
    the main module has no spec (a console script). Here ``sys.argv[0]`` is the program name
    Hydra shows (``calolab train``, no file) and ``sys.argv[1:]`` has lost the command name, so
    the main module's spec is pointed at the command's own module, which runs its Hydra app
    when executed (``python -m calolab.commands.train experiment=...``). Only when the main
    module is calolab's entry point (the ``calolab`` script, ``python -m calolab``), never a
    caller's (pytest, a notebook) that calls :func:`main` in-process.
    """
    import importlib.util

    entry = sys.modules.get("__main__")
    spec = getattr(entry, "__spec__", None)
    ours = spec.name in ENTRY_MODULES if spec is not None else getattr(entry, "main", None) is main
    if entry is not None and ours:
        entry.__spec__ = importlib.util.find_spec(module_name)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = args[0], args[1:]
    if command in COMPLETION_FLAGS:
        return complete(rest)
    if command not in COMMANDS:
        print(f"calolab: error: unknown command {command!r}{suggest(command, COMMANDS)}\n\n{USAGE}", file=sys.stderr)
        return 2
    if any(a in COMPLETION_FLAGS for a in rest):  # `calolab train -sc install=bash`: the same as `calolab -sc ...`
        return complete(rest[rest.index(next(a for a in rest if a in COMPLETION_FLAGS)) + 1 :])
    from calolab.errors import ConfigError
    from calolab.secrets import strip_arguments

    try:  # a password typed into a URL goes to libpq's pgpass, never to Hydra, its files or logs
        rest = strip_arguments(rest)
    except ConfigError as err:
        print(f"calolab {command}: error: {err}", file=sys.stderr)
        return err.exit_code
    module = importlib.import_module(COMMANDS[command][0])
    aliased = getattr(module, "ARG_ALIASES", {})  # keys a command renames before Hydra sees them
    problem = check_group_choices([a for a in rest if a.partition("=")[0] not in aliased])
    if problem:
        print(f"calolab {command}: error: {problem}", file=sys.stderr)
        return 2
    return _run(command, rest)


if __name__ == "__main__":
    sys.exit(main())
