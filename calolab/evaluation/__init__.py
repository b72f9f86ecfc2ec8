"""Physics evaluation of classifiers: metrics, baselines, plots and the one-call photon-ID report.

:mod:`~calolab.evaluation.metrics` holds the weighted ROC read-outs (AUC, rejection at a signal
efficiency, efficiency at a rejection, binned efficiencies, JSD, pixel-output correlations),
:mod:`~calolab.evaluation.baselines` the cut-based and BDT baselines fitted on shower shapes,
:mod:`~calolab.evaluation.plots` the mplhep-styled PNGs, and :mod:`~calolab.evaluation.report`
:class:`ClassifierEvaluation` (configured per experiment in ``conf/evaluation/``), which the
training command runs on the test split, and :func:`evaluate_classifier`, the photon-ID one.
"""

from calolab.evaluation.baselines import SHOWER_SHAPES, CutBasedTight, ShowerShapeBDT
from calolab.evaluation.metrics import (
    auc,
    binned_efficiency,
    efficiency_at_rejection,
    jsd,
    pixel_score_correlation,
    rejection_at_efficiency,
    roc_curve,
)
from calolab.evaluation.report import Binning, ClassifierEvaluation, EvaluationResult, evaluate_classifier

__all__ = [
    "SHOWER_SHAPES",
    "Binning",
    "ClassifierEvaluation",
    "CutBasedTight",
    "EvaluationResult",
    "ShowerShapeBDT",
    "auc",
    "binned_efficiency",
    "efficiency_at_rejection",
    "evaluate_classifier",
    "jsd",
    "pixel_score_correlation",
    "rejection_at_efficiency",
    "roc_curve",
]
