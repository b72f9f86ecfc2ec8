"""The promotion decision: move the aliases only when every gate passed, and record it either way.

:func:`apply_decision` runs inside the promotion lock. It re-reads the champion alias right
before moving it (a last check inside the lock of :mod:`.lock`), sets
``previous-champion`` to the version it replaces before moving ``champion`` (so a crash in
between leaves both aliases on the old champion, never none), and writes the decision onto the
candidate version as tags: ``calolab.decision``, one ``calolab.gate.<name>`` per gate,
``calolab.candidate.<metric>`` and ``calolab.champion.<metric>``. Version tags hold the latest
decision on a version; every decision also gets its own report run (:mod:`.report`).
:func:`rollback` moves ``champion`` back to ``previous-champion``.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from calolab.registry.errors import RegistryError
from calolab.registry.gates import GateResult
from calolab.registry.registration import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    TAG,
    aliases,
    require_registered_model,
    tag_value,
)

PROMOTED, REFUSED = "promoted", "refused"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


@dataclass
class Decision:
    """What a promotion decided, and on which numbers.

    Attributes:
        model_name, version, run_id: the candidate.
        gates: every gate's result, in order.
        candidate_metrics: the candidate's re-evaluated metrics.
        champion_version, champion_metrics: the champion it was compared with (None: there was none).
        candidate_is_champion: the candidate already was the champion.
        aliases_before, aliases_after: alias -> version around the decision.
        lock: the lock kind the decision section ran under.
        decided_at: UTC time of the decision.
        report_run_id: the MLflow run holding the report (set once logged).
        comparisons: candidate-vs-champion lines with their paired uncertainty ("candidate vs
            champion (test/auc): +0.003 +- 0.002 (not resolved; n_eff ...)"), set by the report.
    """

    model_name: str
    version: str
    run_id: str
    gates: list[GateResult]
    candidate_metrics: dict[str, float]
    champion_version: str | None = None
    champion_run_id: str | None = None
    champion_metrics: dict[str, float] | None = None
    candidate_is_champion: bool = False
    aliases_before: dict[str, str] = field(default_factory=dict)
    aliases_after: dict[str, str] = field(default_factory=dict)
    lock: str = ""
    decided_at: str = ""
    report_run_id: str | None = None
    comparisons: list[str] = field(default_factory=list)

    @property
    def promoted(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def outcome(self) -> str:
        return PROMOTED if self.promoted else REFUSED

    def tags(self) -> dict[str, str]:
        """The decision as model-version tags."""
        tags = {
            "decision": self.outcome,
            "decided_at": self.decided_at,
            "compared_with": self.champion_version or "none",
        }
        tags.update({f"gate.{g.name}": g.tag_value() for g in self.gates})
        tags.update({f"candidate.{k}": f"{v:.6g}" for k, v in self.candidate_metrics.items()})
        tags.update({f"champion.{k}": f"{v:.6g}" for k, v in (self.champion_metrics or {}).items()})
        return {TAG + k: tag_value(v) for k, v in tags.items()}


def _gate(decision: Decision, name: str) -> GateResult:
    return next(g for g in decision.gates if g.name == name)


def _set_tags(client, name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def apply_decision(client, decision: Decision) -> Decision:
    """Move the aliases if every gate passed and record the decision; call under the promotion lock."""
    name, version = decision.model_name, decision.version
    decision.decided_at = now()
    if decision.candidate_is_champion:
        # nothing moves, and the champion's own record of its promotion is kept
        client.set_model_version_tag(
            name,
            version,
            TAG + "last_refusal",
            tag_value(f"{decision.decided_at}: {_gate(decision, 'metric').tag_value()}"),
        )
        decision.aliases_after = aliases(client, name)
        return decision
    if decision.aliases_before.get(CHALLENGER) != version:
        client.set_registered_model_alias(name, CHALLENGER, version)
    if decision.promoted:
        current = aliases(client, name).get(CHAMPION)
        if current != decision.champion_version:  # never true under a real lock
            decision.gates.append(
                GateResult(
                    "concurrency",
                    "fail",
                    f"champion moved to v{current} during the comparison with v{decision.champion_version}",
                )
            )
        else:
            old = decision.champion_version
            if old is not None:
                client.set_registered_model_alias(name, PREVIOUS, old)
                client.set_model_version_tag(name, old, TAG + "replaced_by", version)
            client.set_registered_model_alias(name, CHAMPION, version)
            client.delete_registered_model_alias(name, CHALLENGER)
            client.set_model_version_tag(name, version, TAG + "replaced", old or "none")
            after = aliases(client, name).get(CHAMPION)
            if after != version:
                decision.gates.append(
                    GateResult(
                        "concurrency",
                        "fail",
                        f"champion was moved to v{after} by another promotion right after this one",
                    )
                )
    _set_tags(client, name, version, decision.tags())
    decision.aliases_after = aliases(client, name)
    return decision


@dataclass
class Rollback:
    model_name: str
    demoted: str
    restored: str
    previous_after: str | None
    at: str


def rollback(client, name: str) -> Rollback:
    """``champion`` <- ``previous-champion``; call under the promotion lock.

    The new ``previous-champion`` is the version the restored one had replaced when it was
    promoted (tag ``calolab.replaced``), so repeated rollbacks walk back through the history; the
    alias is removed when there is no earlier champion.
    """
    require_registered_model(client, name)
    current = aliases(client, name)
    if CHAMPION not in current:
        raise RegistryError(f"registered model {name!r} has no champion: nothing to roll back")
    if PREVIOUS not in current:
        raise RegistryError(
            f"registered model {name!r} has no previous-champion alias: there is no earlier champion to restore "
            f"(champion is v{current[CHAMPION]})"
        )
    demoted, restored = current[CHAMPION], current[PREVIOUS]
    at = now()
    earlier = client.get_model_version(name, restored).tags.get(TAG + "replaced", "none")
    client.set_registered_model_alias(name, CHAMPION, restored)
    if earlier not in ("none", demoted, restored) and _exists(client, name, earlier):
        client.set_registered_model_alias(name, PREVIOUS, earlier)
        previous_after = earlier
    else:
        client.delete_registered_model_alias(name, PREVIOUS)
        previous_after = None
    client.set_model_version_tag(name, demoted, TAG + "rolled_back", f"{at}: champion returned to v{restored}")
    client.set_model_version_tag(name, restored, TAG + "restored", f"{at}: by rollback from v{demoted}")
    return Rollback(model_name=name, demoted=demoted, restored=restored, previous_after=previous_after, at=at)


def _exists(client, name: str, version: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_model_version(name, version)
        return True
    except MlflowException:
        return False
