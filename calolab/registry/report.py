"""The record of a promotion decision: a markdown report and a ROC overlay, logged to an MLflow run.

Each decision gets its own run ``promote-<model>-v<version>`` in the candidate's experiment,
tagged ``calolab.kind=promotion`` (so it is never taken for a training), with the gates, both
models' metrics as ``candidate/<metric>`` and ``champion/<metric>``, and the artifacts
``promotion/report.md``, ``promotion/roc_overlay.png`` and ``promotion/decision.json``. Every
figure is shown with its uncertainty (a rejection the test set only bounds as "> X"), and the
candidate-vs-champion differences with a paired bootstrap over the same test events, as
"candidate vs champion (test/auc): +0.003 +- 0.002 (not resolved; n_eff ...)" lines.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

from calolab.evaluation import plots
from calolab.evaluation import uncertainty as U
from calolab.registry.decision import Decision
from calolab.registry.gates import paired_comparisons
from calolab.registry.scoring import Scores
from calolab.registry.selection import KIND_TAG


def roc_overlay(path: Path, decision: Decision, candidate: Scores, champion: Scores | None) -> Path:
    """Candidate and champion ROC curves on the frozen test set."""
    es, eb = candidate.roc()
    curves = [
        {"name": f"candidate v{decision.version}", "eff_sig": es, "eff_bkg": eb, "auc": candidate.metrics["test/auc"]}
    ]
    if champion is not None and not decision.candidate_is_champion:
        hs, hb = champion.roc()
        curves.append(
            {
                "name": f"champion v{decision.champion_version}",
                "eff_sig": hs,
                "eff_bkg": hb,
                "auc": champion.metrics["test/auc"],
            }
        )
    return plots.plot_roc(path, curves, title=decision.model_name, n_events=candidate.test.n_events)


def comparisons(
    decision: Decision, candidate: Scores, champion: Scores | None, replicas: int = 1000, seed: int = 0
) -> list[U.Comparison]:
    """Candidate minus champion on the same test events (paired bootstrap); none without a champion
    or when the two were scored on different test sets (forced), where no pairing exists."""
    if champion is None or decision.candidate_is_champion or champion.test.digest != candidate.test.digest:
        return []
    if not (candidate.has_scores and champion.has_scores):  # a generator: no per-event scores to pair
        return []
    test = candidate.test
    return list(
        paired_comparisons(
            test.label, candidate.score, champion.score, test.weight, replicas=replicas, seed=seed
        ).values()
    )


def markdown(decision: Decision, candidate: Scores, champion: Scores | None) -> str:
    d = decision
    lines = [
        f"# Promotion of {d.model_name} v{d.version}: {d.outcome.upper()}",
        "",
        f"- candidate: v{d.version}, run `{d.run_id}`",
        f"- champion compared with: {f'v{d.champion_version}, run `{d.champion_run_id}`' if d.champion_version else 'none'}",
        f"- frozen test set: dataset digest `{candidate.test.digest}`, {candidate.test.n_events} events "
        f"({int(candidate.test.label.sum())} signal)",
    ]
    if champion is not None and champion.test.digest != candidate.test.digest:
        lines.append(f"- forced: the champion was scored on its own test set, digest `{champion.test.digest}`")
    lines += [
        f"- decided at {d.decided_at} under the {d.lock} lock",
        f"- aliases before: {_aliases(d.aliases_before)}; after: {_aliases(d.aliases_after)}",
        "",
        "## Gates",
        "",
        "| gate | result | detail |",
        "|---|---|---|",
        *(f"| {g.name} | {g.status} | {_cell(g.detail)} |" for g in d.gates),
        "",
        "## Metrics on the frozen test set",
        "",
        f"| metric | candidate v{d.version} | champion {f'v{d.champion_version}' if d.champion_version else '-'} | difference |",
        "|---|---|---|---|",
    ]
    theirs = d.champion_metrics or {}
    for key, value in d.candidate_metrics.items():
        if U.is_uncertainty_key(key):
            continue
        other = theirs.get(key)
        bound = U.IS_BOUND
        if other is None:
            diff = "-"
        elif d.candidate_metrics.get(key + bound, 0.0) >= 0.5 or theirs.get(key + bound, 0.0) >= 0.5:
            diff = "not resolved (bound)"
        else:
            diff = f"{value - other:+.6g}"
        mine = U.format_metric(d.candidate_metrics, key)
        lines.append(f"| {key} | {mine} | {'-' if other is None else U.format_metric(theirs, key)} | {diff} |")
    if d.comparisons:
        lines += ["", "## Candidate vs champion on the same test events (paired bootstrap)", ""]
        lines += [f"- {line}" for line in d.comparisons]
    lines += ["", "![ROC overlay](roc_overlay.png)", ""] if candidate.has_scores else [""]
    return "\n".join(lines)


def _cell(text: str) -> str:
    """Text for a markdown table cell (| would end the cell)."""
    return text.replace("|", "\\|")


def _aliases(aliases: dict[str, str]) -> str:
    return ", ".join(f"{a} -> v{v}" for a, v in sorted(aliases.items())) or "none"


def log_report(store, experiment: str, decision: Decision, candidate: Scores, champion: Scores | None) -> str:
    """Log the report run; returns its id."""
    import mlflow

    from calolab.tracking import TrackedRun

    tags = {
        KIND_TAG: "promotion",
        "mlflow.source.name": "calolab promote",
        "calolab.registered_model": decision.model_name,
        "calolab.model_version": decision.version,
        "calolab.decision": decision.outcome,
        "calolab.candidate_run_id": decision.run_id,
        "calolab.champion_version": decision.champion_version or "none",
    }
    name = f"promote-{decision.model_name}-v{decision.version}"
    with TrackedRun(store, experiment, run_name=name, tags=tags) as run, tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        decision.comparisons = [c.line() for c in comparisons(decision, candidate, champion)]
        metrics = {f"candidate/{k}": v for k, v in decision.candidate_metrics.items()}
        metrics.update({f"champion/{k}": v for k, v in (decision.champion_metrics or {}).items()})
        mlflow.log_metrics(metrics)
        (out / "report.md").write_text(markdown(decision, candidate, champion))
        files = ["report.md", "decision.json"]
        if candidate.has_scores:  # a generator has no ROC
            roc_overlay(out / "roc_overlay.png", decision, candidate, champion)
            files.insert(1, "roc_overlay.png")
        record = dataclasses.asdict(decision) | {"outcome": decision.outcome, "report_run_id": run.run_id}
        (out / "decision.json").write_text(json.dumps(record, indent=2))
        for file in files:
            mlflow.log_artifact(str(out / file), "promotion")
        return run.run_id
