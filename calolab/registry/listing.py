"""``calolab registry list``: registered models, their versions, aliases, provenance and key metrics.

Metrics are those of the version's latest promotion decision (re-evaluated on the frozen test
set, tags ``calolab.candidate.<metric>``); a version without one shows its source run's logged
training metrics, marked ``*``.
"""

from __future__ import annotations

from calolab import keys
from calolab.registry.registration import TAG, registered_model, require_registered_model

KEY_METRICS = keys.REGISTRY_METRICS
COLUMNS = ("model", "version", "aliases", "decision", *KEY_METRICS, "source run", "dataset digest")


def registry_rows(client, name: str | None = None, metrics: tuple[str, ...] = KEY_METRICS) -> list[dict[str, str]]:
    """One row per model version (newest first within a model); ``name`` restricts to one model."""
    from mlflow.exceptions import MlflowException

    models = [require_registered_model(client, name)] if name else list(client.search_registered_models())
    rows = []
    for model in sorted(models, key=lambda m: m.name):
        model = registered_model(client, model.name) or model  # search results may lack aliases
        by_version: dict[str, list[str]] = {}
        for alias, version in model.aliases.items():
            by_version.setdefault(str(version), []).append(alias)
        quoted = model.name.replace("'", "\\'")
        versions = sorted(client.search_model_versions(f"name = '{quoted}'"), key=lambda v: -int(v.version))
        for mv in versions:
            row = {
                "model": model.name,
                "version": str(mv.version),
                "aliases": ",".join(sorted(by_version.get(str(mv.version), []))) or "-",
                "decision": mv.tags.get(TAG + "decision", "-"),
                "source run": mv.run_id or "-",
                "dataset digest": mv.tags.get(TAG + "dataset_digest", "-")[:12],
            }
            run_metrics = None
            for key in metrics:
                value = mv.tags.get(f"{TAG}candidate.{key}")
                if value is None:
                    if run_metrics is None:
                        try:
                            run_metrics = client.get_run(mv.run_id).data.metrics if mv.run_id else {}
                        except MlflowException:
                            run_metrics = {}
                    logged = run_metrics.get(key)
                    value = "-" if logged is None else f"{logged:.4g}*"
                else:
                    value = f"{float(value):.4g}"
                row[key] = value
            rows.append(row)
    return rows


def format_table(rows: list[dict[str, str]], columns: tuple[str, ...] = COLUMNS) -> str:
    """A plain-text table, one line per row."""
    widths = {c: max([len(c), *(len(r.get(c, "")) for r in rows)]) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns).rstrip()]
    lines += ["  ".join(r.get(c, "").ljust(widths[c]) for c in columns).rstrip() for r in rows]
    return "\n".join(lines)
