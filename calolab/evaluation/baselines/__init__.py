"""Physics baselines a network is compared with, each fitted on the training split only.

Every baseline follows :class:`Baseline` (``name``, ``label``, ``variables``, ``fit``, ``score``,
``passes``), so that an experiment lists its own in ``conf/evaluation/<name>.yaml``:

- :class:`CutBasedTight`: tight-like rectangular cuts (photon ID's working point);
- :class:`BDT`: gradient-boosted trees on any aux variables; :class:`ShowerShapeBDT` is its
  photon configuration on the shower shapes;
- :class:`Variable`: one observable as the discriminant (tau21, constituent multiplicity, width);
- :class:`MassWindowCut`: a jet-mass window and a tau21 cut (the cut-based W tagger);
- :class:`ProjectiveLikelihood`: an EM-probability-like likelihood on cluster moments (pi0 / pi+-);
- :class:`EMScaleEnergy`, :class:`LocalHadronicWeighting`: energy baselines of cluster calibration
  (not classifiers: :class:`~calolab.evaluation.regression.RegressionEvaluation` uses them).
"""

from calolab.evaluation.baselines._base import DIRECTIONS, SHOWER_SHAPES, Baseline
from calolab.evaluation.baselines._bdt import BDT, BDT_SMALL_FIT, ShowerShapeBDT
from calolab.evaluation.baselines._cuts import CutBasedTight
from calolab.evaluation.baselines._mass_window import W_WINDOW_MEV, MassWindowCut
from calolab.evaluation.baselines._variable import Variable

__all__ = [
    "BDT",
    "BDT_SMALL_FIT",
    "DIRECTIONS",
    "SHOWER_SHAPES",
    "W_WINDOW_MEV",
    "Baseline",
    "CutBasedTight",
    "MassWindowCut",
    "ShowerShapeBDT",
    "Variable",
]

# issue 16: the pi0 / pi+- EM probability and the cluster-calibration energy baselines
from calolab.evaluation.baselines._energy import EMScaleEnergy, EnergyBaseline, LocalHadronicWeighting  # noqa: E402
from calolab.evaluation.baselines._likelihood import ProjectiveLikelihood  # noqa: E402

__all__ += ["EMScaleEnergy", "EnergyBaseline", "LocalHadronicWeighting", "ProjectiveLikelihood"]
