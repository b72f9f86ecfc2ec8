"""The test-split evaluation of a generator, configured per experiment (``conf/evaluation/lagan.yaml``).

:class:`GeneratorEvaluation` is the generator's counterpart of
:class:`~calolab.evaluation.report.ClassifierEvaluation`, called by the pipeline the same way
(``evaluation(task, dm, out_dir, title)``). Per class it generates as many images as the test split
holds (up to ``max_events``) for seeded latents, through the task's own inference path
(``task.generate``, i.e. :meth:`~lightning_modules.task.Task.predict`), and compares them with the
simulated test images (:mod:`calolab.evaluation.fidelity`):

- metrics ``test/w1_{pixel,mass,pt,tau21}_<class>``, ``test/fpd_<class>``, the floor
  ``test/floor_<distance>_<class>`` (two halves of the simulated images), and the headline
  ``test/fpd`` (mean over classes, what the registry's generator policy compares; lower is
  better), ``test/fpd_floor`` and ``test/fpd_over_floor``;
- figures: average generated vs simulated image and their difference per class
  (``average_<class>.png``), distribution overlays of pixel intensity, mass, pT and tau21
  (``distributions.png``), a grid of generated images (``generated_grid.png``).

:meth:`GeneratorEvaluation.frozen_metrics` is the registry's cheap path: the same metrics, no figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from calolab import keys
from calolab.errors import CalolabError, ConfigError
from calolab.evaluation import plots
from calolab.evaluation.fidelity import FEATURES, jet_features, per_class
from calolab.evaluation.report import EvaluationResult, _jsonable

FEATURE_LABELS = {
    "pixel": "Pixel $p_T$ [GeV]",
    "mass": "Jet mass from the image [GeV]",
    "pt": "Jet $p_T$ from the image [GeV]",
    "tau21": r"$\tau_{21}$ from the image",
}


class GeneratorEvaluation:
    """A class-conditional generator's evaluation on the test split, as one experiment configures it.

    Args:
        max_events: simulated test images per class compared (the first ones); None: all.
        half_width: ``[eta, phi]`` half-widths of the images (the data's), for mass, pT and tau21.
        class_names: legend name of each class label (0, 1, ...).
        unit_scale: multiplies pixel values, mass and pT in metrics and plots (0.001: MeV -> GeV).
        seed: seed of the latents the test images are generated from.
        grid: ``[rows, columns]`` of generated images per class in the grid figure.
        batch_size: images per generation batch.
    """

    def __init__(
        self,
        max_events: int | None = 10000,
        half_width: Sequence[float] = (1.25, 1.25),
        class_names: Sequence[str] = ("QCD jets", "W jets"),
        unit_scale: float = 1.0,
        seed: int = 1,
        grid: Sequence[int] = (4, 8),
        batch_size: int = 4096,
    ) -> None:
        if max_events is not None and (
            isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 4
        ):
            raise ConfigError(f"evaluation.max_events must be an integer >= 4 or null, but got {max_events!r}")
        if len(half_width) != 2:
            raise ConfigError(f"evaluation.half_width must be [eta, phi], but got {list(half_width)}")
        if len(grid) != 2 or any(isinstance(g, bool) or not isinstance(g, int) or g < 1 for g in grid):
            raise ConfigError(f"evaluation.grid must be [rows, columns] of integers >= 1, but got {list(grid)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"evaluation.batch_size must be an integer >= 1, but got {batch_size!r}")
        self.max_events = max_events
        self.half_width = (float(half_width[0]), float(half_width[1]))
        self.class_names = [str(c) for c in class_names]
        self.unit_scale = float(unit_scale)
        self.seed = int(seed)
        self.grid = (int(grid[0]), int(grid[1]))
        self.batch_size = batch_size

    # -- shared by the pipeline and the registry --------------------------------------------------
    def _centres(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from datamodules.jet_images import pixel_centres

        return pixel_centres(images.shape[-2:], self.half_width)

    def _select(self, images: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The first ``max_events`` images of each class."""
        label = np.asarray(label).astype(np.int64)
        keep = np.zeros(len(label), bool)
        for c in np.unique(label):
            keep[np.flatnonzero(label == c)[: self.max_events]] = True
        return np.asarray(images[keep], np.float32), label[keep]

    def _classes(self, label: np.ndarray) -> list[tuple[int, str]]:
        present = [int(c) for c in np.unique(label)]
        if max(present) >= len(self.class_names):
            raise ConfigError(
                f"evaluation.class_names {self.class_names} name {len(self.class_names)} classes, but the test split "
                f"has labels {present}"
            )
        return [(c, self.class_names[c]) for c in present]

    @staticmethod
    def _key(name: str) -> str:
        return "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")

    def metrics_from(self, distances: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
        """``test/...`` metrics from :func:`~calolab.evaluation.fidelity.per_class` results."""
        m: dict[str, float] = {}
        for name, values in distances.items():
            m.update({f"test/{k}_{self._key(name)}": float(v) for k, v in values.items()})
        m[keys.TEST_FPD] = float(np.mean([v["fpd"] for v in distances.values()]))
        m[keys.TEST_FPD_FLOOR] = float(np.mean([v["floor_fpd"] for v in distances.values()]))
        m["test/fpd_over_floor"] = m[keys.TEST_FPD] / m[keys.TEST_FPD_FLOOR] if m[keys.TEST_FPD_FLOOR] > 0 else np.inf
        return m

    def compare(self, task, images: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict, dict]:
        """Generate for the selected test classes and compare; returns images, labels, generated, distances."""
        images, label = self._select(images, label)
        if images.ndim != 4:
            raise CalolabError(f"the generator evaluation needs (N, C, H, W) test images, but got shape {images.shape}")
        classes = self._classes(label)
        generated = task.generate(label, self.seed, self.batch_size)
        if not np.all(np.isfinite(generated)):
            raise CalolabError(f"the generator produced {int((~np.isfinite(generated)).sum())} non-finite pixels")
        eta, phi = self._centres(images)
        distances = per_class(generated, label, images, label, classes, eta, phi, self.unit_scale, self.seed)
        return images, label, generated, distances

    def frozen_metrics(self, task, inputs: Mapping[str, np.ndarray], input_names: Sequence[str], label: np.ndarray):
        """The registry's cheap path on a frozen test set: the metrics, no figures."""
        _, _, _, distances = self.compare(task, np.asarray(inputs[input_names[0]]), label)
        return self.metrics_from(distances)

    # -- the pipeline's entry point --------------------------------------------------------------
    def __call__(self, task, dm, out_dir: Path, title: str = "") -> tuple[EvaluationResult, dict[str, np.ndarray]]:
        """Compare generated with simulated test images; returns the result and the generated sample."""
        test = dm.arrays("test")
        name = list(dm.input_names)[0]
        images, label, generated, distances = self.compare(task, test.inputs[name], test.label)
        out_dir = Path(out_dir)
        result = EvaluationResult(metrics=self.metrics_from(distances))
        result.metrics["test/n_events"] = float(len(label))
        result.tables = {"fidelity": _jsonable(dict(distances)), "unit_scale": self.unit_scale}
        eta, phi = self._centres(images)
        for c, cname in self._classes(label):
            key = self._key(cname)
            result.figures[f"average_{key}"] = plots.plot_average_images(
                out_dir / f"average_{key}.png",
                generated[label == c, 0].mean(0) * self.unit_scale,
                images[label == c, 0].mean(0) * self.unit_scale,
                f"{cname}: average image",
                class_names=("Generated", "Simulated"),
                title=title,
                n_events=int((label == c).sum()),
            )
        result.figures["distributions"] = self.plot_distributions(
            out_dir / "distributions.png", images, generated, label, eta, phi, title
        )
        result.figures["generated_grid"] = self.plot_grid(out_dir / "generated_grid.png", generated, label, title)
        return result, {"label": label.astype(np.int32), "image": generated.astype(np.float32)}

    # -- figures ---------------------------------------------------------------------------------
    def plot_distributions(self, path, images, generated, label, eta, phi, title: str) -> Path:
        """Pixel intensity, mass, pT and tau21 of generated (dashed) and simulated (solid) images per class."""
        sim = jet_features(images, eta, phi, self.unit_scale)
        gen = jet_features(generated, eta, phi, self.unit_scale)
        classes = self._classes(label)
        colours = ["tab:blue", "tab:red", "tab:green", "tab:purple"]
        with plots._figure(path, plots._rlabel(title, len(label)), nrows=2, ncols=2, figsize=(14.0, 11.0)) as (_, axes):
            for ax, feature in zip(axes.flat, ("pixel", *FEATURES)):
                for k, (c, cname) in enumerate(classes):
                    if feature == "pixel":
                        s = images[label == c].ravel() * self.unit_scale
                        g = generated[label == c].ravel() * self.unit_scale
                        s, g = s[s > 0], g[g > 0]
                    else:
                        s, g = sim[feature][label == c], gen[feature][label == c]
                    both = np.concatenate([s, g]) if s.size + g.size else np.zeros(1)
                    lo, hi = np.percentile(both, [0.5, 99.5]) if both.size else (0.0, 1.0)
                    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, 41)
                    colour = colours[k % len(colours)]
                    ax.hist(s, edges, histtype="step", density=True, color=colour, label=f"{cname} simulated")
                    ax.hist(g, edges, histtype="step", density=True, color=colour, ls="--", label=f"{cname} generated")
                ax.set_xlabel(FEATURE_LABELS[feature])
                ax.set_ylabel("Normalised")
                if feature == "pixel":
                    ax.set_yscale("log")
                ax.legend(fontsize="x-small")
        return Path(path)

    def plot_grid(self, path, generated, label, title: str) -> Path:
        """The first ``rows x columns`` generated images of each class, log colour scale."""
        import matplotlib.colors

        rows, cols = self.grid
        classes = self._classes(label)
        n_rows = rows * len(classes)
        with plots._figure(
            path, plots._rlabel(title, len(label)), nrows=n_rows, ncols=cols, figsize=(2.0 * cols, 2.1 * n_rows + 0.8)
        ) as (fig, axes):
            axes = np.asarray(axes).reshape(n_rows, cols)
            positive = generated[generated > 0]
            vmax = float(positive.max()) if positive.size else 1.0
            norm = matplotlib.colors.LogNorm(vmin=vmax * 1e-4, vmax=vmax)
            for k, (c, cname) in enumerate(classes):
                shown = generated[label == c][: rows * cols, 0]
                for i in range(rows * cols):
                    ax = axes[k * rows + i // cols, i % cols]
                    ax.set_xticks([])
                    ax.set_yticks([])
                    if i < len(shown):
                        ax.imshow(np.ma.masked_less_equal(shown[i].T, 0), origin="lower", norm=norm, cmap="viridis")
                    if i == 0:
                        ax.set_ylabel(cname, fontsize="small")
        return Path(path)
