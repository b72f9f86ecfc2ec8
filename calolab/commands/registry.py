"""``calolab registry list [name=<model>]``: the registered models, versions, aliases and key metrics."""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from calolab.app import hydra_app

ACTIONS = {"list": "registered models, versions, aliases, source runs, digests and key metrics"}
USAGE = "usage: calolab registry <action> [overrides ...]\n\nactions:\n" + "\n".join(
    f"  {name:<6} {doc}" for name, doc in ACTIONS.items()
)


@hydra_app("registry", "registry")
def _list(cfg: DictConfig) -> None:
    from calolab.registry import format_table, registry_rows
    from calolab.registry.listing import COLUMNS, KEY_METRICS
    from calolab.tracking import TrackingStore, scrub_uri

    store = TrackingStore.resolve(cfg.tracking.uri, cfg.paths.mlruns_dir)
    metrics = tuple(dict.fromkeys((*KEY_METRICS, str(cfg.registry.metric))))
    rows = registry_rows(store.client(), None if cfg.name is None else str(cfg.name), metrics)
    if not rows:
        print(f"no registered model versions in {scrub_uri(store.uri)}")
        return
    columns = (*COLUMNS[:4], *metrics, *COLUMNS[4 + len(KEY_METRICS) :])
    print(format_table(rows, columns))


def main() -> None:
    from calolab.errors import suggest

    args = sys.argv[1:]
    if not args:
        print(f"calolab registry: error: an action is required\n\n{USAGE}", file=sys.stderr)
        sys.exit(2)
    if args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    action = args[0]
    if action not in ACTIONS:
        print(
            f"calolab registry: error: unknown action {action!r}{suggest(action, ACTIONS)}\n\n{USAGE}", file=sys.stderr
        )
        sys.exit(2)
    sys.argv = [f"{sys.argv[0]} {action}", *args[1:]]
    _list()


if __name__ == "__main__":
    main()
