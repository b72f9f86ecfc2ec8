"""``calolab sample model=<name>[@alias] | run_id=<id>  n=<N> out=<file.root>``: jets from a trained generator.

The generator's ONNX model (the registered version behind ``<name>@<alias>``, ``champion`` by
default, or a training run's ``onnx/model.onnx``) runs in onnxruntime on seeded standard-normal
latents (or ``latents=<file.npy>``) and the requested classes (``classes=[...]``, taken in turn;
all the trained classes by default). The images are written as the ``jets`` tree the W taggers'
data configs read: each non-empty pixel is a neutral constituent (``const_pt`` = pixel pT at the
pixel's centre ``const_eta``/``const_phi``, around the jet axis ``jet_eta = jet_phi = 0``), with
``jet_pt``, ``jet_m`` and ``jet_tau21`` computed from the image (:mod:`datamodules.jet_observables`),
``jet_nconst``, ``truth_label`` (the class), ``mu = 0`` and ``event_number``. A tagger's
``JetImageDataModule`` rebuilds the same image from them (the generated images are already
centred, rotated and flipped).

The file also holds the record ``calolab_sample`` (:mod:`calolab.generation.sampled_images`): the
generator and the frame of its images (geometry from the ONNX metadata; centring, rotation, flip and
normalisation from the generator's training config), so that ``calolab evaluate run_id=<tagger>
data.files=[<file>]`` can check that a tagger reads them as they were generated.

Bad input is one clear error and a non-zero exit, before anything is written: ``n <= 0``, a class
outside the trained ones, latents whose size is not the model's, a model that is not a generator.
The file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from calolab.app import hydra_app, rename_args
from calolab.errors import CalolabError, ConfigError, InputFileError
from calolab.generation.sampled_images import RECORD_KEY, frame_from_data, make_record

log = logging.getLogger(__name__)

#: command-line key -> config key (``model`` is a config group of ``calolab train``)
ARG_ALIASES = {"model": "registered_model"}
#: the task kind an ONNX model must carry to be sampled from
GENERATOR = "generator"


def _download(cfg: DictConfig, store, tmp: Path) -> tuple[Path, str, str]:
    """The ONNX file of the model named in ``cfg``, a description of where it came from, and its run."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from calolab.registry.registration import version_by_alias

    model, run_id = cfg.registered_model, cfg.run_id
    if (model is None) == (run_id is None):
        raise ConfigError(
            f"give model=<registered model>[@<alias>] or run_id=<id>, exactly one (got model={model!r}, run_id={run_id!r})"
        )
    mlflow.set_tracking_uri(store.uri)
    client = store.client()
    if run_id is not None:
        try:
            client.get_run(str(run_id))
            path = client.download_artifacts(str(run_id), "onnx/model.onnx", str(tmp))
        except (MlflowException, OSError) as err:
            raise InputFileError(f"run {run_id} has no ONNX model onnx/model.onnx in {store.uri}: {err}") from err
        return Path(path), f"run {run_id}", str(run_id)
    version = version_by_alias(client, str(model))
    name, alias = version.name, str(model).partition("@")[2] or "champion"
    try:
        folder = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version.version}", dst_path=str(tmp)
        )
    except Exception as err:  # MlflowException or OSError from the artifact repository
        raise InputFileError(f"cannot download {name} v{version.version}: {err}") from err
    return Path(folder) / "model.onnx", f"{name}@{alias} (v{version.version}, run {version.run_id})", version.run_id


def _training_data(store, run_id: str, tmp: Path) -> dict | None:
    """The data config the generator of ``run_id`` trained on (its ``config.yaml``), or None."""
    from mlflow.exceptions import MlflowException

    try:
        path = store.client().download_artifacts(run_id, "config.yaml", str(tmp))
    except (MlflowException, OSError) as err:
        log.warning(
            "calolab sample: run %s has no config.yaml (%s); the images' frame is recorded as unknown", run_id, err
        )
        return None
    data = OmegaConf.to_container(OmegaConf.load(path)).get("data")
    return data if isinstance(data, dict) else None


class OnnxGenerator:
    """A generator's ONNX model: its latent size, classes and image geometry from the graph and metadata."""

    def __init__(self, path: Path, what: str) -> None:
        import onnxruntime as ort

        from calolab.export.onnx import read_metadata

        meta = read_metadata(path)
        if meta.get("task") != GENERATOR:
            raise ConfigError(f"{what} is a {meta.get('task', 'unknown')!r} model, not a generator: nothing to sample")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.latent_dim = int(meta["latent_dim"])
        self.class_names = json.loads(meta["class_names"])
        self.half_width = json.loads(meta["half_width"])
        self.what = what

    def check(self, latent: np.ndarray, label: np.ndarray) -> None:
        if latent.ndim != 2 or latent.shape[1] != self.latent_dim:
            raise ConfigError(
                f"latent vectors must have shape (n, {self.latent_dim}): {self.what} was trained with latent size "
                f"{self.latent_dim}, but got {latent.shape}"
            )
        bad = sorted({int(c) for c in label if c not in range(len(self.class_names))})
        if bad:
            raise ConfigError(
                f"classes must be among the trained classes {list(range(len(self.class_names)))} "
                f"({', '.join(self.class_names)}), but got {bad}"
            )

    def __call__(self, latent: np.ndarray, label: np.ndarray, batch_size: int) -> np.ndarray:
        self.check(latent, label)
        out = []
        for start in range(0, len(latent), batch_size):
            feed = dict(zip(self.inputs, (latent[start : start + batch_size], label[start : start + batch_size])))
            out.append(self.session.run(None, {k: np.ascontiguousarray(v, np.float32) for k, v in feed.items()})[0])
        return np.concatenate(out)


def jets_from_images(images: np.ndarray, label: np.ndarray, half_width) -> dict:
    """The ``jets`` tree's branches for (N, C, H, W) pT images (first channel) of classes ``label``."""
    import awkward as ak

    from datamodules.jet_images import pixel_centres
    from datamodules.jet_observables import image_mass, image_pt, image_tau21

    pt_images = np.asarray(images[:, 0], np.float32)  # (N, H, W)
    eta, phi = pixel_centres(pt_images.shape[1:], half_width)
    n = len(pt_images)
    jet, ie, ip = np.nonzero(pt_images > 0)  # row-major: jets in order
    counts = np.bincount(jet, minlength=n)
    const = ak.zip(
        {
            "pt": ak.unflatten(pt_images[jet, ie, ip], counts),
            "eta": ak.unflatten(eta[ie].astype(np.float32), counts),
            "phi": ak.unflatten(phi[ip].astype(np.float32), counts),
            "charge": ak.unflatten(np.zeros(len(jet), np.float32), counts),
            "is_pileup": ak.unflatten(np.zeros(len(jet), bool), counts),
        }
    )
    return {
        "jet_pt": image_pt(pt_images, eta, phi).astype(np.float32),
        "jet_eta": np.zeros(n, np.float32),
        "jet_phi": np.zeros(n, np.float32),
        "jet_m": image_mass(pt_images, eta, phi).astype(np.float32),
        "jet_tau21": image_tau21(pt_images, eta, phi).astype(np.float32),
        "jet_nconst": counts.astype(np.int32),
        "truth_label": np.asarray(label, np.int32),
        "mu": np.zeros(n, np.float32),
        "event_number": np.arange(n, dtype=np.int64),
        "const": const,
    }


def sample(cfg: DictConfig) -> tuple[Path, str, np.ndarray]:
    """Generate and write; returns the file, the model's description and the labels written."""
    from calolab.tracking import TrackingStore

    n = cfg.n
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ConfigError(f"n must be a positive number of images, but got n={n!r}")
    out = Path(str(cfg.out)).expanduser().resolve()
    if out.suffix != ".root":
        raise ConfigError(f"out must be a .root file, but got {out}")
    latents = None
    if cfg.latents is not None:
        try:
            latents = np.load(str(cfg.latents))
        except (OSError, ValueError) as err:
            raise InputFileError(f"cannot read latents {cfg.latents}: {err}") from err
        if latents.ndim != 2 or len(latents) != n:
            raise ConfigError(
                f"latents {cfg.latents} must hold n={n} vectors (n, latent size), but has shape {latents.shape}"
            )
    store = TrackingStore.resolve(cfg.tracking.uri, cfg.paths.mlruns_dir)
    with tempfile.TemporaryDirectory(prefix="calolab-sample-") as tmp:
        path, what, run_id = _download(cfg, store, Path(tmp))
        gen = OnnxGenerator(path, what)
        data = _training_data(store, run_id, Path(tmp))
        classes = list(range(len(gen.class_names))) if cfg.classes is None else OmegaConf.to_container(cfg.classes)
        classes = classes if isinstance(classes, list) else [classes]
        if not classes or any(isinstance(c, bool) or not isinstance(c, int) for c in classes):
            raise ConfigError(f"classes must be a list of integer class labels, but got {classes!r}")
        label = np.asarray(classes, np.int64)[np.arange(n) % len(classes)]
        if latents is None:
            latents = np.random.default_rng(int(cfg.seed)).standard_normal((n, gen.latent_dim)).astype(np.float32)
        images = gen(np.asarray(latents, np.float32), label, int(cfg.batch_size))
    if not np.all(np.isfinite(images)):
        raise CalolabError(f"{what} generated non-finite pixels")
    frame = frame_from_data(data, images.shape[1:], gen.half_width)
    write_sample(out, images, label, gen.half_width, make_record(what, str(cfg.tree), frame), str(cfg.tree))
    return out, what, label


def write_sample(out: Path, images: np.ndarray, label: np.ndarray, half_width, record: str, tree: str = "jets") -> None:
    """Write (N, C, H, W) images of classes ``label`` as ``tree`` and the ``record`` to ``out``, atomically."""
    import uproot

    from calolab.generation.writer import write_tree

    branches = jets_from_images(images, label, half_width)
    part = out.with_name(f".{out.name}.{os.getpid()}.part")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_tree(part, tree, branches, title=f"generated by {json.loads(record)['generator']}")
        with uproot.update(part) as f:
            f[RECORD_KEY] = record
        os.replace(part, out)
    finally:
        part.unlink(missing_ok=True)


@hydra_app("sample_images", "sample")
def _sample(cfg: DictConfig) -> None:
    out, what, label = sample(cfg)
    counts = ", ".join(f"{int((label == c).sum())} of class {c}" for c in np.unique(label))
    print(f"sampled {len(label)} jet images from {what} ({counts}) -> {out}")


def main() -> None:
    sys.argv = [sys.argv[0], *rename_args(sys.argv[1:], ARG_ALIASES)]
    _sample()


if __name__ == "__main__":
    main()
