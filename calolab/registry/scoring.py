"""Re-evaluation of candidate and champion on one frozen test set, by the same code.

The frozen test set is the test split of the candidate's datamodule, identified by its dataset
digest (the split is deterministic by event number). Both tasks score those identical events with
their own :meth:`~lightning_modules.task.Task.predict`, the inference path the training's
evaluation uses, and the key metrics come from the run's configured evaluation: a classifier's
``key_metrics`` on its scores, or, when the evaluation has ``frozen_metrics`` (a generator's,
:class:`~calolab.evaluation.generative.GeneratorEvaluation`), the metrics it computes from the
task and the test set itself (generated vs simulated images; no scores, so no ROC and no paired
score comparison). This is the cheap path: no baselines, no binned efficiencies, no figures (the
report draws one ROC overlay for classifiers). :func:`parity_arrays` gives the parity and latency
gates the inputs the task's ONNX graph takes: the test events, or the task's own fixed
:meth:`~lightning_modules.task.Task.example_inputs` (a generator: fixed latents and classes).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np

from calolab.errors import CalolabError
from calolab.evaluation.metrics import roc_curve
from calolab.evaluation.report import ClassifierEvaluation

#: Batch size of the scoring passes (as conf/evaluation/default.yaml).
BATCH_SIZE = 4096


@dataclass
class FrozenTestSet:
    """The frozen test split: per-layer inputs, labels, weights and aux branches, all (N, ...)."""

    digest: str
    input_names: list[str]
    inputs: dict[str, np.ndarray]
    label: np.ndarray
    weight: np.ndarray
    aux: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_events(self) -> int:
        return int(self.label.size)


@dataclass
class Scores:
    """One model's scores on a test set and the metrics computed from them."""

    score: np.ndarray | None  # (N,); None for a task without scores (a generator)
    metrics: dict[str, float]
    test: FrozenTestSet

    @property
    def has_scores(self) -> bool:
        """Whether there are per-event scores (ROC overlay, paired bootstrap, decorrelation)."""
        return self.score is not None

    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        """``(eff_sig, eff_bkg)`` of the weighted ROC curve."""
        eff_s, eff_b, _ = roc_curve(self.test.label, self.score, self.test.weight)
        return eff_s, eff_b


def frozen_test_set(dm) -> FrozenTestSet:
    """The test split of a prepared datamodule."""
    a = dm.arrays("test")
    return FrozenTestSet(
        digest=dm.digest,
        input_names=list(dm.input_names),
        inputs={k: np.asarray(a.inputs[k]) for k in dm.input_names},
        label=np.asarray(a.label),
        weight=np.asarray(a.weight),
        aux={k: np.asarray(v) for k, v in a.aux.items()},
    )


def score_task(task, test: FrozenTestSet, what: str, evaluation=None) -> Scores:
    """Score ``test`` with ``task.predict`` and compute the key metrics of ``evaluation`` (default: a classifier's)."""
    frozen = getattr(evaluation, "frozen_metrics", None)
    if frozen is not None:  # the evaluation computes its metrics from the task itself (a generator)
        try:
            takes_aux = "aux" in inspect.signature(frozen).parameters  # a regression's truth is an aux variable
            extra = {"aux": test.aux} if takes_aux else {}
            metrics = frozen(task, test.inputs, test.input_names, test.label, **extra)
        except CalolabError as err:
            raise CalolabError(
                f"{what} could not be evaluated on the test split (digest {test.digest}): {err}"
            ) from err
        return Scores(score=None, metrics=metrics, test=test)
    score = task.predict(test.inputs, test.input_names, BATCH_SIZE)["score"]
    bad = int((~np.isfinite(score)).sum())
    if bad:
        raise CalolabError(f"{what} produced {bad} non-finite scores on the test split (digest {test.digest})")
    key_metrics = (evaluation or ClassifierEvaluation).key_metrics
    return Scores(score=score, metrics=key_metrics(test.label, score, test.weight), test=test)


def parity_arrays(task, test: FrozenTestSet, n: int) -> tuple[list[str], list[np.ndarray]]:
    """The ONNX graph's input names and at most ``n`` events of each: the task's own fixed inputs
    (:meth:`~lightning_modules.task.Task.inference_inputs`), else the frozen test set's."""
    own = task.inference_inputs()
    if own is None:
        return list(test.input_names), [np.ascontiguousarray(test.inputs[k][:n]) for k in test.input_names]
    examples = task.example_inputs(n)
    return list(own), [np.ascontiguousarray(examples[k]) for k in own]
