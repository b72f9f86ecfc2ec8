"""The location-aware GAN as a training scheme: a task with no score and two nets.

:class:`LAGAN` trains :class:`~lightning_modules.nets.lagan.LaganNets` (generator and discriminator)
adversarially with Lightning's manual optimisation, as the published LAGAN (arXiv:1701.05927,
``../shared/REFERENCE.md``): two optimisers, one discriminator step then ``generator_steps``
generator steps per batch; one-sided label smoothing of the real targets and a fraction of the
discriminator's real/fake targets flipped; the auxiliary signal/background head trained on real
images (their labels) and on generated ones (the class they were asked for), so the generator
learns to produce the class it is given (class-conditional sampling, classes drawn as in the data).

What the pipeline asks of a task, it answers like any other (:class:`~lightning_modules.task.Task`):
``kind = "generator"``; the inference module is the generator (:class:`GeneratedImage`: latent
``(B, L)`` and class ``(B,)`` in, image ``(B, C, H, W)`` out, in the data's pixel units), which is
what ONNX export writes; :meth:`LAGAN.predict` generates images for given latents and classes
(bad latent sizes or classes are one clear error each); :meth:`LAGAN.inference_inputs` and
:meth:`LAGAN.example_inputs` give export and the registry the generator's inputs and fixed latents
for the parity check.

Every epoch, on the fixed validation images (up to ``val_events`` per class; the same each epoch)
and generated images for fixed latents (seeded), the task logs per class the fidelity of
:mod:`calolab.evaluation.fidelity`: ``val/w1_{pixel,mass,pt,tau21}_<class>`` and
``val/fpd_<class>``, beside the floor ``val/floor_..._<class>`` (two halves of the simulated
images), and ``val/fpd`` (the mean over classes: the figure of merit for checkpoints and sweeps,
lower is better) and ``val/fpd_floor``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

from calolab import keys
from calolab.errors import CalolabError, ConfigError, check_number
from lightning_modules.classifier import WeightedMean, _as_factory, factory_config
from lightning_modules.nets.lagan import LaganNets
from lightning_modules.task import Task

LATENT, LABEL, IMAGE = "latent", "label", "image"


class GeneratedImage(nn.Module):
    """The generator as deployed: ``(latent (B, L), label (B,)) -> image (B, C, H, W)`` in data units."""

    input_names = (LATENT, LABEL)

    def __init__(self, generator: nn.Module, pixel_scale: float) -> None:
        super().__init__()
        self.generator = generator
        self.pixel_scale = float(pixel_scale)

    def forward(self, *inputs: Tensor) -> Tensor:  # (latent, label), as calolab's ONNX export passes inputs
        latent, label = inputs
        return self.generator(latent, label) * self.pixel_scale


class LAGAN(Task):
    """Train a class-conditional location-aware GAN on the data's images.

    Args:
        net: :class:`LaganNets` (``generator`` and ``discriminator``).
        optimizer: partial taking parameters (``_partial_: true``), used for each net (Adam 2e-4,
            beta1 0.5 as published).
        generator_steps: generator updates per discriminator update.
        label_smoothing: one-sided: real images' target is ``1 - label_smoothing``.
        label_flip: fraction of the discriminator's real/fake targets swapped each step.
        aux_weight: weight of the auxiliary class loss in both nets' losses.
        pixel_scale: the nets work on ``image / pixel_scale`` (O(1) values); generated images are
            multiplied back, so the inference module outputs the data's units.
        half_width: the images' ``[eta, phi]`` half-widths (the data's), for mass, pT and tau21.
        class_names: name of each class label (0, 1, ...), used in metric keys.
        val_events: validation images per class the fidelity is computed on (the first ones).
        unit_scale: multiplies mass and pT in the metrics (0.001: MeV images -> GeV).
        seed: seed of the fixed validation latents and of :meth:`example_inputs`.
    """

    kind = "generator"
    output_names = (IMAGE,)
    output_doc = {IMAGE: "generated image in the data's pixel units, shape (batch, C, H, W)"}

    def __init__(
        self,
        net: LaganNets,
        optimizer: Callable[..., Optimizer],
        generator_steps: int = 1,
        label_smoothing: float = 0.0,
        label_flip: float = 0.05,
        aux_weight: float = 1.0,
        pixel_scale: float = 1.0,
        half_width: Sequence[float] = (1.25, 1.25),
        class_names: Sequence[str] = ("qcd", "w"),
        val_events: int = 2000,
        unit_scale: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(net, LaganNets):
            raise ConfigError(f"net must be lightning_modules.nets.lagan.LaganNets, but got {type(net).__name__}")
        self.automatic_optimization = False
        self.net = net
        self.optimizer_factory = _as_factory(optimizer, "optimizer")
        if isinstance(generator_steps, bool) or not isinstance(generator_steps, int) or generator_steps < 1:
            raise ConfigError(f"generator_steps must be an integer >= 1, but got {generator_steps!r}")
        for name, value in (("label_smoothing", label_smoothing), ("label_flip", label_flip)):
            if not 0.0 <= check_number(name, value) < 0.5:
                raise ConfigError(f"{name} must be in [0, 0.5), but got {name}={value!r}")
        check_number("aux_weight", aux_weight, 0)
        if not check_number("pixel_scale", pixel_scale) > 0:
            raise ConfigError(f"pixel_scale must be > 0, but got pixel_scale={pixel_scale!r}")
        if len(class_names) != net.generator.n_classes or len(set(class_names)) != len(class_names):
            raise ConfigError(
                f"class_names must name each of the {net.generator.n_classes} classes once, but got {list(class_names)}"
            )
        if isinstance(val_events, bool) or not isinstance(val_events, int) or val_events < 4:
            raise ConfigError(f"val_events must be an integer >= 4, but got {val_events!r}")
        if len(half_width) != 2:
            raise ConfigError(f"half_width must be [eta, phi], but got {list(half_width)}")
        self.save_hyperparameters(
            {
                "optimizer": factory_config(self.optimizer_factory),
                "generator_steps": int(generator_steps),
                "label_smoothing": float(label_smoothing),
                "label_flip": float(label_flip),
                "aux_weight": float(aux_weight),
                "pixel_scale": float(pixel_scale),
                "half_width": [float(v) for v in half_width],
                "class_names": [str(c) for c in class_names],
                "val_events": int(val_events),
                "unit_scale": float(unit_scale),
                "seed": int(seed),
            },
            logger=False,
        )
        self.d_loss, self.g_loss, self.aux_acc = WeightedMean(), WeightedMean(), WeightedMean()
        self._val: list[tuple[np.ndarray, np.ndarray]] = []
        self._floor: tuple[int, dict] | None = None

    # -- what the pipeline asks ------------------------------------------------------------------
    @property
    def latent_dim(self) -> int:
        return self.net.generator.latent_dim

    @property
    def n_classes(self) -> int:
        return self.net.generator.n_classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.net.image_shape

    def inference_module(self) -> nn.Module:
        return GeneratedImage(self.net.generator, self.hparams.pixel_scale)

    def inference_inputs(self) -> dict[str, tuple[int, ...]]:
        return {LATENT: (self.latent_dim,), LABEL: ()}

    def export_metadata(self) -> dict[str, str]:
        """What ``calolab sample`` needs besides the graph: latent size, classes, image geometry."""
        return {
            "latent_dim": str(self.latent_dim),
            "class_names": json.dumps(list(self.hparams.class_names)),
            "image_shape": json.dumps(list(self.image_shape)),
            "half_width": json.dumps(list(self.hparams.half_width)),
        }

    def example_inputs(self, n: int) -> dict[str, np.ndarray]:
        """``n`` fixed standard-normal latents (seeded by ``seed``) and classes 0, 1, ..., 0, 1, ..."""
        rng = np.random.default_rng(self.hparams.seed)
        return {
            LATENT: rng.standard_normal((n, self.latent_dim)).astype(np.float32),
            LABEL: (np.arange(n) % self.n_classes).astype(np.float32),
        }

    def check_inputs(self, latent: np.ndarray, label: np.ndarray) -> None:
        """One clear error for latents of the wrong size or classes the generator was not trained on."""
        latent, label = np.asarray(latent), np.asarray(label)
        if latent.ndim != 2 or latent.shape[1] != self.latent_dim:
            raise CalolabError(
                f"latent vectors must have shape (N, {self.latent_dim}) (the model's latent size), but got {latent.shape}"
            )
        if label.shape != (latent.shape[0],):
            raise CalolabError(
                f"expected one class label per latent vector ({latent.shape[0]},), but got {label.shape}"
            )
        bad = ~np.isin(label, np.arange(self.n_classes))
        if bad.any():
            raise CalolabError(
                f"class labels must be among the trained classes {list(range(self.n_classes))} "
                f"({', '.join(self.hparams.class_names)}), but got {sorted(set(np.asarray(label)[bad].tolist()))[:5]}"
            )

    @torch.no_grad()
    def predict(
        self, inputs: Mapping[str, np.ndarray], input_names: Sequence[str] = (LATENT, LABEL), batch_size: int = 4096
    ) -> dict[str, np.ndarray]:
        """Generated images ``{"image": (N, C, H, W)}`` for ``inputs = {"latent": (N, L), "label": (N,)}``."""
        if LATENT in inputs and LABEL in inputs:
            self.check_inputs(inputs[LATENT], inputs[LABEL])
        arrays = {k: np.asarray(v, np.float32) for k, v in inputs.items()}
        return super().predict(arrays, list(input_names), batch_size)

    def generate(self, label: np.ndarray, seed: int, batch_size: int = 4096) -> np.ndarray:
        """Images (N, C, H, W) of the given classes for seeded standard-normal latents."""
        label = np.asarray(label)
        latent = np.random.default_rng(seed).standard_normal((len(label), self.latent_dim)).astype(np.float32)
        return self.predict({LATENT: latent, LABEL: label}, batch_size=batch_size)[IMAGE]

    # -- training --------------------------------------------------------------------------------
    def configure_optimizers(self) -> list[Optimizer]:
        optimizers = [self.optimizer_factory(self.net.discriminator.parameters())]
        optimizers.append(self.optimizer_factory(self.net.generator.parameters()))
        for opt in optimizers:
            if not isinstance(opt, Optimizer):
                raise ConfigError(f"optimizer must build a torch.optim.Optimizer, but built {type(opt).__name__}")
        return optimizers

    def _targets(self, n: int, real: bool) -> Tensor:
        """Real/fake targets: real ``1 - label_smoothing``, fake 0; a ``label_flip`` fraction swapped."""
        hp = self.hparams
        high, low = 1.0 - hp.label_smoothing, 0.0
        target = torch.full((n,), high if real else low, device=self.device)
        if hp.label_flip > 0:
            flip = torch.rand(n, device=self.device) < hp.label_flip
            target = torch.where(flip, torch.full_like(target, low if real else high), target)
        return target

    def training_step(self, batch: tuple[tuple[Tensor, ...], Tensor, Tensor], batch_idx: int) -> None:
        inputs, label, _ = batch
        hp = self.hparams
        real = inputs[0] / hp.pixel_scale  # (B, C, H, W)
        label = label.long()
        n = real.shape[0]
        gen, disc = self.net.generator, self.net.discriminator
        opt_d, opt_g = self.optimizers()

        # discriminator: real vs generated (classes drawn as in the batch), and the class of both
        fake_label = label[torch.randperm(n, device=self.device)]
        with torch.no_grad():
            fake = gen(torch.randn(n, self.latent_dim, device=self.device), fake_label)
        real_logit, real_aux = disc(real)
        fake_logit, fake_aux = disc(fake)
        loss_d = F.binary_cross_entropy_with_logits(real_logit, self._targets(n, True))
        loss_d = loss_d + F.binary_cross_entropy_with_logits(fake_logit, self._targets(n, False))
        loss_d = loss_d + hp.aux_weight * (F.cross_entropy(real_aux, label) + F.cross_entropy(fake_aux, fake_label))
        opt_d.zero_grad()
        self.manual_backward(loss_d)
        opt_d.step()

        # generator: fool the real/fake head and be recognised as the class asked for
        for _ in range(hp.generator_steps):
            wanted = label[torch.randperm(n, device=self.device)]
            logit, aux = disc(gen(torch.randn(n, self.latent_dim, device=self.device), wanted))
            loss_g = F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit))
            loss_g = loss_g + hp.aux_weight * F.cross_entropy(aux, wanted)
            opt_g.zero_grad()
            self.manual_backward(loss_g)
            opt_g.step()

        one = torch.tensor(float(n), device=self.device)
        self.d_loss.update(loss_d.detach(), one)
        self.g_loss.update(loss_g.detach(), one)
        self.aux_acc.update((real_aux.argmax(1) == label).float().mean(), one)

    def on_train_epoch_end(self) -> None:
        self.log(keys.TRAIN_D_LOSS, self.d_loss, on_step=False, on_epoch=True)
        self.log(keys.TRAIN_G_LOSS, self.g_loss, on_step=False, on_epoch=True)
        self.log(keys.TRAIN_AUX_ACC, self.aux_acc, on_step=False, on_epoch=True)

    # -- validation: fidelity on fixed images and fixed latents ----------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val = []

    def validation_step(self, batch: tuple[tuple[Tensor, ...], Tensor, Tensor], batch_idx: int) -> None:
        inputs, label, _ = batch
        self._val.append((inputs[0].detach().float().cpu().numpy(), label.detach().cpu().numpy().astype(np.int64)))

    def fixed_validation_set(self, images: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The first ``val_events`` images of each class (the validation loader is not shuffled)."""
        keep = np.zeros(len(label), bool)
        for c in range(self.n_classes):
            keep[np.flatnonzero(label == c)[: self.hparams.val_events]] = True
        return images[keep], label[keep]

    def fidelity(self, images: np.ndarray, label: np.ndarray, with_floor: bool = True) -> dict[str, dict[str, float]]:
        """Per class, generated (fixed latents) vs ``images``: :func:`calolab.evaluation.fidelity.per_class`."""
        from calolab.evaluation.fidelity import per_class
        from datamodules.jet_images import pixel_centres

        hp = self.hparams
        eta, phi = pixel_centres(self.image_shape[1:], hp.half_width)
        generated = self.generate(label, hp.seed)
        classes = [(c, hp.class_names[c]) for c in range(self.n_classes) if (label == c).any()]
        return per_class(generated, label, images, label, classes, eta, phi, hp.unit_scale, hp.seed, with_floor)

    def on_validation_epoch_end(self) -> None:
        if not self._val or self.trainer.sanity_checking:
            return
        images, label = self.fixed_validation_set(
            np.concatenate([v[0] for v in self._val]), np.concatenate([v[1] for v in self._val])
        )
        self._val = []
        if min((label == c).sum() for c in range(self.n_classes)) < 4:
            raise CalolabError(
                f"the validation split has {[int((label == c).sum()) for c in range(self.n_classes)]} images per class; "
                "the fidelity metrics need at least 4 of each (more data, or a larger data.split.val)"
            )
        values = self.fidelity(images, label, with_floor=False)
        key = (len(label), float(images.sum()))
        if self._floor is None or self._floor[0] != key:  # the floor of fixed images is computed once
            self._floor = (key, self.floor(images, label))
        metrics = {}
        for name, dist in values.items():
            metrics.update({f"val/{k}_{name}": v for k, v in dist.items()})
            metrics.update({f"val/floor_{k}_{name}": v for k, v in self._floor[1][name].items()})
        metrics[keys.VAL_FPD_FLOOR] = float(np.mean([d["fpd"] for d in self._floor[1].values()]))
        self.log_dict(metrics, on_step=False, on_epoch=True)
        fpd = float(np.mean([d["fpd"] for d in values.values()]))
        self.log(keys.VAL_FPD, fpd, on_step=False, on_epoch=True, prog_bar=True)

    def floor(self, images: np.ndarray, label: np.ndarray) -> dict[str, dict[str, float]]:
        """Per class, the distances between two halves of ``images`` (:func:`calolab.evaluation.fidelity.floor`)."""
        from calolab.evaluation.fidelity import floor
        from datamodules.jet_images import pixel_centres

        hp = self.hparams
        eta, phi = pixel_centres(self.image_shape[1:], hp.half_width)
        return {
            hp.class_names[c]: floor(images[label == c], eta, phi, hp.unit_scale, hp.seed)
            for c in range(self.n_classes)
            if (label == c).any()
        }

    def forward(self, latent: Tensor, label: Tensor) -> Tensor:
        """Generated images (B, C, H, W) in the data's units."""
        return self.inference_module()(latent, label)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        latent, label = batch[:2]
        return self(latent, label)
