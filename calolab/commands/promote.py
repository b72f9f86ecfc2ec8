"""``calolab promote experiment=<name> [run_id=<id> | sweep=<study>] [force=true] [rollback=true]``.

Promotes a training run through the MLflow model registry (see :mod:`calolab.registry`) and
prints the decision. Exit codes: 0 promoted (or rolled back), 3 refused by a gate
(:data:`calolab.registry.EXIT_REFUSED`), 2 bad input. ``experiment=`` and ``sweep=`` are the
command's spellings of the config keys ``experiment_name`` and ``study``: ``conf/experiment/``
is a config group, so Hydra would otherwise read ``experiment=<name>`` as choosing a preset.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from calolab.app import hydra_app, rename_args

#: command-line key -> config key, renamed before Hydra parses the overrides
ARG_ALIASES = {"experiment": "experiment_name", "sweep": "study"}


def rename_aliases(args: list[str]) -> list[str]:
    """``experiment=x`` -> ``experiment_name=x`` and ``sweep=s`` -> ``study=s``; the rest unchanged."""
    return rename_args(args, ARG_ALIASES)


def format_decision(decision, candidate) -> str:
    d = decision
    lines = [
        f"promote {d.model_name}: run {d.run_id} -> version {d.version} (test set {candidate.test.n_events} events)"
    ]
    width = max(len(g.name) for g in d.gates)
    lines += [f"  {g.name:<{width}}  {g.status}: {g.detail}" for g in d.gates]
    after = ", ".join(f"{a} -> v{v}" for a, v in sorted(d.aliases_after.items())) or "none"
    if d.promoted:
        lines.append(f"PROMOTED: {d.model_name}@champion is version {d.version} (aliases: {after})")
    else:
        kept = f"v{d.aliases_after['champion']}" if "champion" in d.aliases_after else "none"
        lines.append(f"REFUSED: champion stays {kept} (aliases: {after})")
    lines += [f"  {line}" for line in d.comparisons]
    lines.append(f"report: run {d.report_run_id} (promotion/report.md and its figures)")
    return "\n".join(lines)


@hydra_app("promote", "promote")
def _promote(cfg: DictConfig) -> None:
    from calolab.errors import ConfigError
    from calolab.registry import EXIT_REFUSED, GatePolicy, promote, roll_back
    from calolab.tracking import TrackingStore

    experiment = cfg.experiment_name
    if not experiment:
        raise ConfigError("experiment is required: calolab promote experiment=<name> [run_id=<id> | sweep=<study>]")
    policy = GatePolicy.from_config(cfg.registry)
    store = TrackingStore.resolve(cfg.tracking.uri, cfg.paths.mlruns_dir)
    name = str(cfg.registered_model or experiment)
    if cfg.rollback:
        if cfg.run_id is not None or cfg.study is not None:
            raise ConfigError("rollback=true restores the previous champion: give no run_id or sweep with it")
        done = roll_back(store, name, policy)
        previous = f"v{done.previous_after}" if done.previous_after else "none"
        print(f"rolled back {name}: champion v{done.demoted} -> v{done.restored} (previous-champion: {previous})")
        return
    decision, candidate, _ = promote(
        store,
        str(experiment),
        policy,
        run_id=None if cfg.run_id is None else str(cfg.run_id),
        study=None if cfg.study is None else str(cfg.study),
        registered_model=name,
        force=bool(cfg.force),
    )
    print(format_decision(decision, candidate))
    if not decision.promoted:
        sys.exit(EXIT_REFUSED)


def main() -> None:
    sys.argv = [sys.argv[0], *rename_aliases(sys.argv[1:])]
    _promote()


if __name__ == "__main__":
    main()
