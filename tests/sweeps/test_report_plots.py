"""The sweep's study plots leave no pyplot figure open, also when optuna fails half-way through one."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402

from sweeps.report import study_plots  # noqa: E402


def test_study_plots_close_every_figure_they_open(tmp_path):
    study = optuna.create_study(direction="maximize")
    study.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-2, log=True), n_trials=1)
    before = plt.get_fignums()
    written = study_plots(study, ["val/auc"], tmp_path)
    assert {p.name for p in written} >= {"optimization_history.png"}
    assert plt.get_fignums() == before
