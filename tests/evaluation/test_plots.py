"""The figure writers: readable PNGs, no pyplot state, no leaked style."""

from __future__ import annotations

import matplotlib
import matplotlib.image
import numpy as np
import pytest

from calolab.errors import InputFileError
from calolab.evaluation import binned_efficiency, plots, roc_curve


def test_plots_write_pngs_without_touching_pyplot_or_rcparams(tmp_path):
    rng = np.random.default_rng(0)
    label = np.arange(400) % 2
    score = rng.normal(size=400) + label
    weight = rng.uniform(0.5, 1.5, 400)
    before = dict(matplotlib.rcParams)
    es, eb, _ = roc_curve(label, score, weight)
    tab = binned_efficiency(label, score > 0.5, rng.uniform(0, 1.37, 400), [0, 0.6, 0.8, 1.15, 1.37], weight)
    corr = rng.uniform(-0.3, 0.3, (7, 11))
    corr[0, 0] = np.nan
    paths = [
        plots.plot_roc(
            tmp_path / "roc.png",
            [{"name": "net", "eff_sig": es, "eff_bkg": eb, "auc": 0.76}],
            [{"name": "cuts", "eff_sig": 0.8, "rejection": 3.0}],
            n_events=400,
        ),
        plots.plot_binned_efficiency(tmp_path / "eta.png", {"net": tab}, xlabel=r"$|\eta|$", n_events=400),
        plots.plot_score(tmp_path / "score.png", label, score, weight),
        plots.plot_correlation_map(tmp_path / "corr.png", corr, "EMB2", n_events=400),
    ]
    for path in paths:
        assert matplotlib.image.imread(path).shape[:2] == (600, 800) or path.name == "eta.png"
    assert matplotlib.image.imread(paths[1]).shape[:2] == (800, 800)
    assert dict(matplotlib.rcParams) == before
    if "matplotlib.pyplot" in __import__("sys").modules:
        import matplotlib.pyplot as plt

        assert plt.get_fignums() == []


def test_unwritable_figure_path_names_the_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputFileError, match="file/sub/score.png"):
        plots.plot_score(blocker / "sub" / "score.png", np.array([0, 1]), np.array([0.1, 0.9]), np.ones(2))
