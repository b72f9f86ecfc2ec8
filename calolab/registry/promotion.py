"""``promote``: select -> re-evaluate -> gates -> (locked) register, compare, decide -> report.

The expensive part (restoring the candidate and the champion from their runs, scoring the frozen
test set, the parity and latency gates) runs before the lock and touches nothing. The locked
section registers the run (or finds its version), re-reads the champion, re-scores it if another
promotion replaced it meanwhile, applies the metric gate against *that* champion, and moves the
aliases. Promotions of one model are therefore serialised: each compares with the champion of
the moment it decides, and two promotions cannot both win against the same champion.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from calolab.registry import gates as G
from calolab.registry.decision import Decision, Rollback, apply_decision, rollback
from calolab.registry.errors import RegistryError
from calolab.registry.lock import REGISTRY, ensure_registered_model, lock_kind, promotion_lock
from calolab.registry.policy import GatePolicy
from calolab.registry.registration import CHAMPION, TAG, aliases, find_or_register, registered_model
from calolab.registry.scoring import FrozenTestSet, Scores, frozen_test_set, parity_arrays, score_task
from calolab.registry.selection import Candidate, select_candidate
from calolab.tracking import TrackingStore

log = logging.getLogger(__name__)


@dataclass
class _Champion:
    """The champion version a candidate is compared with, and its scores."""

    version: str
    run_id: str
    digest: str
    scores: Scores


def download_onnx(candidate: Candidate, store: TrackingStore, dst: Path) -> Path:
    """The ``model.onnx`` of the candidate's ONNX LoggedModel (the file that gets registered)."""
    import mlflow

    uri = candidate.onnx_model.artifact_location.rstrip("/") + "/model.onnx"
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst), tracking_uri=store.uri))
    except Exception as err:  # MlflowException or OSError from the artifact repository
        raise RegistryError(
            f"cannot download the ONNX model of run {candidate.run_id} ({candidate.onnx_model.model_uri}): {err}"
        ) from err


def _champion_now(client, name: str) -> tuple[str, object] | None:
    version = aliases(client, name).get(CHAMPION)
    return None if version is None else (version, client.get_model_version(name, version))


def _score_champion(store: TrackingStore, version: str, mv, test: FrozenTestSet) -> _Champion:
    """Restore the champion's source run and score ``test`` (or its own test split when digests differ)."""
    from calolab.pipeline.evaluate import build_evaluation
    from calolab.pipeline.restore import RunNotFoundError, restore_run

    digest = mv.tags.get(TAG + "dataset_digest", "")
    try:
        restored = restore_run(mv.run_id, store)
    except RunNotFoundError as err:
        raise RegistryError(f"cannot restore champion v{version} from its source run {mv.run_id}: {err}") from err
    own = test if digest == test.digest else frozen_test_set(restored.dm)
    scores = score_task(restored.model, own, f"champion v{version} (run {mv.run_id})", build_evaluation(restored.cfg))
    return _Champion(version=version, run_id=mv.run_id, digest=digest, scores=scores)


def _paired(policy: GatePolicy, cand: Scores, champion: _Champion | None) -> dict | None:
    """Candidate-vs-champion comparisons on the same events (paired bootstrap), when they share the test set."""
    if champion is None or champion.scores.test is not cand.test or not cand.has_scores:
        return None
    return G.paired_comparisons(
        cand.test.label,
        cand.score,
        champion.scores.score,
        cand.test.weight,
        replicas=policy.bootstrap_replicas,
        seed=policy.bootstrap_seed,
    )


def _rescore(client, store, name, current, candidate, test, force) -> tuple[_Champion | None, G.GateResult | None]:
    """Score champion ``current`` inside the lock; a mismatch or failure becomes a failed gate, not an error.

    Raising here would leave the candidate's freshly registered version without a decision.
    """
    mv = client.get_model_version(name, current)
    try:
        G.dataset_gate(candidate.digest, mv.tags.get(TAG + "dataset_digest", ""), current, force)
        return _score_champion(store, current, mv, test), None
    except RegistryError as err:
        return None, G.GateResult("dataset", G.FAIL, f"champion changed to v{current} during the promotion: {err}")


def promote(
    store: TrackingStore,
    experiment: str,
    policy: GatePolicy,
    *,
    run_id: str | None = None,
    study: str | None = None,
    registered_model: str | None = None,
    force: bool | None = None,
) -> tuple[Decision, Scores, Scores | None]:
    """Promote a run of ``experiment`` to ``registered_model`` (default: the experiment's name).

    Returns:
        The decision and the scores it was made on (candidate, champion or None). The decision is
        already recorded (version tags, report run); ``decision.promoted`` says whether
        ``champion`` moved.

    Raises:
        RegistryError: bad input (unknown run, experiment or model; no ONNX model; digest
            mismatch without ``force``), raised before any alias is touched.
    """
    import mlflow

    from calolab.pipeline.evaluate import build_evaluation
    from calolab.pipeline.export import parity_reference
    from calolab.pipeline.restore import RunNotFoundError, restore_run
    from calolab.registry.report import log_report

    mlflow.set_tracking_uri(store.uri)  # MLflow's SQL registry resolves models:/<id> sources through it
    client = store.client()
    name = registered_model or experiment
    force = policy.force_digest if force is None else bool(force)
    candidate = select_candidate(
        client, experiment, store.uri, run_id=run_id, study=study, metric=policy.metric, mode=policy.mode
    )
    require_promotion_rights(store, client, name, candidate.experiment)
    seen = _champion_now(client, name)
    if seen is not None:  # refuse a digest mismatch before anything expensive
        G.dataset_gate(candidate.digest, seen[1].tags.get(TAG + "dataset_digest", ""), seen[0], force)

    try:
        restored = restore_run(candidate.run_id, store)
    except RunNotFoundError as err:
        raise RegistryError(f"cannot restore candidate run {candidate.run_id}: {err}") from err
    if restored.dm.digest != candidate.digest:
        raise RegistryError(
            f"run {candidate.run_id} is tagged with dataset digest {candidate.digest[:16]} but its data now digests "
            f"to {restored.dm.digest[:16]}: the input files changed since it was trained"
        )
    test = frozen_test_set(restored.dm)
    task = restored.model.cpu().eval()
    evaluation = build_evaluation(restored.cfg)
    cand = score_task(task, test, f"candidate run {candidate.run_id}", evaluation)
    with tempfile.TemporaryDirectory(prefix="calolab-promote-") as tmp:
        onnx_path = download_onnx(candidate, store, Path(tmp))
        names, arrays = parity_arrays(task, test, policy.parity.events)  # a generator: fixed latents
        early = [
            G.parity_gate(
                onnx_path,
                parity_reference(task, names),
                arrays,
                policy.parity.with_defaults(restored.cfg.export),
            ),
            G.latency_gate(onnx_path, dict(zip(names, arrays)), policy.latency),
            G.decorrelation_gate(
                test.label,
                cand.score,
                test.weight,
                test.aux,
                policy.decorrelation,
                getattr(evaluation, "decorrelation", []),  # a generator's or regression's: none
            ),
        ]
        champion = None
        if seen is not None and seen[1].run_id != candidate.run_id:
            champion = _score_champion(store, seen[0], seen[1], test)

        if lock_kind(store.uri) == REGISTRY:  # that lock lives in the model's tags: the model must exist
            ensure_registered_model(client, name, {"calolab.experiment": candidate.experiment})
        with promotion_lock(store.uri, name, policy.lock_timeout_s) as lock:
            version, created = find_or_register(client, name, candidate, onnx_path)
            before = aliases(client, name)
            current = before.get(CHAMPION)
            is_champion = current == version
            late = None  # a gate failed by a champion that changed meanwhile and cannot be compared
            if current is None or is_champion:
                champion = None
            elif champion is None or champion.version != current:
                # another promotion moved the champion since this one looked: compare with the new one
                champion, late = _rescore(client, store, name, current, candidate, test, force)
            if is_champion:
                dataset = G.GateResult("dataset", G.PASS, f"candidate is champion v{current}: same test set")
            elif late is not None:
                dataset = late
            else:
                dataset = G.dataset_gate(candidate.digest, champion.digest if champion else None, current, force)
            decision = Decision(
                model_name=name,
                version=version,
                run_id=candidate.run_id,
                gates=[
                    dataset,
                    G.GateResult("metric", G.SKIP, "no comparison: the new champion could not be scored")
                    if late is not None
                    else G.metric_gate(
                        policy,
                        cand.metrics,
                        champion.scores.metrics if champion else None,
                        current,
                        is_champion,
                        _paired(policy, cand, champion),
                    ),
                    *early,
                ],
                candidate_metrics=cand.metrics,
                champion_version=current,
                champion_run_id=champion.run_id if champion else (candidate.run_id if is_champion else None),
                champion_metrics=champion.scores.metrics if champion else (cand.metrics if is_champion else None),
                candidate_is_champion=is_champion,
                aliases_before=before,
                lock=lock,
            )
            apply_decision(client, decision)
            log.info(
                "promotion of %s v%s (%s version): %s",
                name,
                version,
                "new" if created else "existing",
                decision.outcome,
            )

    champion_scores = champion.scores if champion else None
    decision.report_run_id = log_report(store, candidate.experiment, decision, cand, champion_scores)
    if not decision.candidate_is_champion:
        client.set_model_version_tag(name, version, TAG + "report_run_id", decision.report_run_id)
    return decision, cand, champion_scores


def require_promotion_rights(store: TrackingStore, client, name: str, experiment: str | None) -> None:
    """On a tracking server with authentication: refuse in one line, before anything is restored or
    moved, a user who may not move ``name``'s aliases (EDIT on the registered model, MLflow's
    requirement for aliases and versions) or log the decision's report run to ``experiment``."""
    if registered_model(client, name) is not None:
        store.require(
            "registered_model", name, "EDIT", f"registered model {name!r}", "move its aliases (calolab promote)"
        )
    if experiment:
        exp = client.get_experiment_by_name(experiment)
        if exp is not None:
            store.require(
                "experiment", exp.experiment_id, "EDIT", f"experiment {experiment!r}", "record a promotion in it"
            )


def roll_back(store: TrackingStore, name: str, policy: GatePolicy) -> Rollback:
    """``champion`` <- ``previous-champion`` of registered model ``name``, under the promotion lock."""
    client = store.client()
    require_promotion_rights(store, client, name, None)
    with promotion_lock(store.uri, name, policy.lock_timeout_s):
        return rollback(client, name)
