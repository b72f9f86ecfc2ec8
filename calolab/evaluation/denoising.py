"""The test-split evaluation of a pileup-denoising auto-encoder (PAED), configured by ``conf/evaluation/paed.yaml``.

:class:`DenoisingEvaluation` is called by the pipeline as every evaluation
(``evaluation(task, dm, out_dir, title)``). It runs the task's one inference path
(:meth:`~lightning_modules.task.Task.predict`) on the test split's pileup images and compares the
denoised images and the raw pileup images with the same events' pileup-free ones (the data's
``targets``):

- per layer ``test/mse_<layer>`` (denoised vs clean, per cell, in the images' units squared) and
  ``test/mse_raw_<layer>`` (pileup vs clean), and the headline ``test/mse_ratio``: the summed
  denoised MSE over the summed raw MSE (lower is better; 1 = no better than leaving the pileup);
- per layer the energy response, the layer energy over the clean layer energy, for events whose
  clean layer holds more than ``min_energy``: ``test/response_<layer>`` (median) and
  ``test/resolution_<layer>`` (IQR/2 / median), and their ``_raw`` twins;
- with ``mu`` among the data's aux, ``test/mse_ratio_mu<i>`` in ``mu_bins`` (table ``binned.mu``);
- figures: per layer ``images_<layer>``, ``n_examples`` test events as pileup / denoised / clean
  images side by side, and ``response``, the summed-energy response of the raw and denoised images.

The outputs returned (logged as ``evaluation/test_outputs.npz``) are the denoised test images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from calolab.errors import ConfigError
from calolab.evaluation.report import EvaluationResult

QUANTILES = (25.0, 50.0, 75.0)


def response_summary(num: np.ndarray, den: np.ndarray, min_energy: float) -> tuple[float, float]:
    """(median, IQR/2 / median) of ``num / den`` over events with ``den > min_energy``; NaN for none."""
    keep = den > min_energy
    if not keep.any():
        return float("nan"), float("nan")
    r = num[keep] / den[keep]
    q25, q50, q75 = np.percentile(r, QUANTILES)
    return float(q50), float((q75 - q25) / 2.0 / q50) if q50 > 0 else float("nan")


class DenoisingEvaluation:
    """Reconstruction metrics and image plots of a denoiser on the test split (see the module docstring).

    Args:
        min_energy: events whose clean layer energy is at most this (the images' units) are left
            out of that layer's response.
        mu: the aux variable holding each event's mu (skipped when the data lacks it).
        mu_bins: edges of the mu bins of ``test/mse_ratio_mu<i>``.
        n_examples: test events drawn in the image plots.
        batch_size: inference batch size.
    """

    def __init__(
        self,
        min_energy: float = 500.0,
        mu: str = "mu",
        mu_bins: Sequence[float] = (0.0, 50.0, 100.0, 150.0, 200.0),
        n_examples: int = 3,
        batch_size: int = 4096,
    ) -> None:
        edges = np.asarray(list(mu_bins), float)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise ConfigError(f"evaluation.mu_bins must be at least two increasing edges, but got {list(mu_bins)}")
        if not isinstance(n_examples, int) or n_examples < 0:
            raise ConfigError(f"evaluation.n_examples must be an integer >= 0, but got {n_examples!r}")
        self.min_energy = float(min_energy)
        self.mu = mu
        self.mu_bins = edges
        self.n_examples = n_examples
        self.batch_size = int(batch_size)

    def __call__(self, task, dm, out_dir: Path, title: str = "") -> tuple[EvaluationResult, dict[str, np.ndarray]]:
        targets = getattr(dm, "targets", None)
        layers = list(getattr(task, "layer_names", []))
        if not targets or not layers:
            raise ConfigError(
                "the denoising evaluation needs a denoiser task and data with targets (conf/data/paed.yaml)"
            )
        test = dm.arrays("test")
        noisy = {k: np.asarray(test.inputs[k]) for k in layers}
        clean = {k: np.asarray(test.inputs[targets[k]]) for k in layers}
        out = task.predict(noisy, layers, batch_size=self.batch_size)
        denoised = {k: out[f"denoised_{k}"] for k in layers}
        result = EvaluationResult()
        m, tables = result.metrics, {"layers": {}}
        sq = {k: ((denoised[k] - clean[k]) ** 2).reshape(len(clean[k]), -1).mean(axis=1) for k in layers}  # (N,)
        sq_raw = {k: ((noisy[k] - clean[k]) ** 2).reshape(len(clean[k]), -1).mean(axis=1) for k in layers}
        energies = {}
        for k in layers:
            e_clean, e_noisy, e_den = (a.reshape(len(a), -1).sum(axis=1) for a in (clean[k], noisy[k], denoised[k]))
            energies[k] = (e_clean, e_noisy, e_den)
            row = {"mse": float(sq[k].mean()), "mse_raw": float(sq_raw[k].mean())}
            row["response"], row["resolution"] = response_summary(e_den, e_clean, self.min_energy)
            row["response_raw"], row["resolution_raw"] = response_summary(e_noisy, e_clean, self.min_energy)
            tables["layers"][k] = row
            for name, value in row.items():
                m[f"test/{name}_{k}"] = value
        total, total_raw = sum(sq.values()), sum(sq_raw.values())  # (N,)
        m["test/mse_ratio"] = float(total.mean() / max(total_raw.mean(), 1e-30))
        if self.mu in test.aux:
            mu = np.asarray(test.aux[self.mu], float)
            rows = []
            for i, (lo, hi) in enumerate(zip(self.mu_bins[:-1], self.mu_bins[1:], strict=True)):
                sel = (mu >= lo) & (mu < hi) if i < len(self.mu_bins) - 2 else (mu >= lo) & (mu <= hi)
                ratio = float(total[sel].mean() / max(total_raw[sel].mean(), 1e-30)) if sel.any() else float("nan")
                m[f"test/mse_ratio_mu{i}"] = ratio
                rows.append({"low": float(lo), "high": float(hi), "events": int(sel.sum()), "mse_ratio": ratio})
            tables["binned"] = {"mu": rows}
        else:
            tables.setdefault("skipped", {})["binned.mu"] = f"no aux variable {self.mu!r} in the data"
        result.tables = tables
        n_test = len(next(iter(clean.values())))
        for k in layers:
            if self.n_examples:
                result.figures[f"images_{k}"] = self._images(
                    out_dir / f"images_{k}.png", k, noisy[k], denoised[k], clean[k], title, n_test
                )
        result.figures["response"] = self._response(out_dir / "response.png", energies, title, n_test)
        return result, denoised

    def frozen_metrics(self, task, inputs, input_names, label=None) -> dict[str, float]:
        """The registry's cheap path on a frozen test set: ``test/mse_ratio`` and the per-layer MSEs.

        ``inputs`` holds the test split's noisy images and their targets (``<name>__target``).
        """
        from datamodules.calo import TARGET_SUFFIX

        layers = list(task.layer_names)
        missing = [k + TARGET_SUFFIX for k in layers if k + TARGET_SUFFIX not in inputs]
        if missing:
            raise ConfigError(f"the frozen test set has no clean targets {missing}: not a denoising dataset")
        out = task.predict({k: inputs[k] for k in layers}, layers, batch_size=self.batch_size)
        metrics, total, total_raw = {}, 0.0, 0.0
        for k in layers:
            clean = np.asarray(inputs[k + TARGET_SUFFIX])
            mse = float(((out[f"denoised_{k}"] - clean) ** 2).mean())
            mse_raw = float(((np.asarray(inputs[k]) - clean) ** 2).mean())
            metrics[f"test/mse_{k}"], metrics[f"test/mse_raw_{k}"] = mse, mse_raw
            total, total_raw = total + mse, total_raw + mse_raw
        metrics["test/mse_ratio"] = total / max(total_raw, 1e-30)
        return metrics

    def _images(self, path: Path, layer: str, noisy, denoised, clean, title: str, n_test: int) -> Path:
        from calolab.evaluation.plots import _figure, _rlabel

        n = min(self.n_examples, len(clean))
        with _figure(path, _rlabel(title, n_test), nrows=max(n, 1), ncols=3, figsize=(12.0, 3.2 * max(n, 1) + 1)) as (
            fig,
            axes,
        ):
            axes = np.asarray(axes).reshape(max(n, 1), 3)
            fig.suptitle(f"{layer}: pileup / denoised / pileup-free (MeV)", fontsize="medium")
            for i in range(n):
                images = (noisy[i, 0], denoised[i, 0], clean[i, 0])
                vmax = max(float(max(np.abs(a).max() for a in images)), 1e-12)
                for j, (image, label) in enumerate(zip(images, ("pileup", "denoised", "pileup-free"), strict=True)):
                    ax = axes[i, j]
                    ax.imshow(image.T, origin="lower", aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax)
                    ax.text(0.03, 0.05, f"event {i}: {label}", transform=ax.transAxes, fontsize="x-small")
        return Path(path)

    def _response(self, path: Path, energies, title: str, n_test: int) -> Path:
        from calolab.evaluation.plots import _figure, _rlabel

        e_clean = sum(v[0] for v in energies.values())
        e_noisy = sum(v[1] for v in energies.values())
        e_den = sum(v[2] for v in energies.values())
        keep = e_clean > self.min_energy
        with _figure(path, _rlabel(title, n_test)) as (fig, ax):
            if keep.any():
                r_raw, r_den = e_noisy[keep] / e_clean[keep], e_den[keep] / e_clean[keep]
                lo, hi = np.percentile(np.concatenate([r_raw, r_den]), [1.0, 99.0])
                bins = np.linspace(min(lo, 0.9), max(hi, 1.1), 40)
                ax.hist(r_raw, bins, histtype="step", label="pileup (raw)")
                ax.hist(r_den, bins, histtype="step", label="denoised")
                ax.legend()
            ax.set_xlabel("E (all layers) / E pileup-free")
            ax.set_ylabel("events")
        return Path(path)
