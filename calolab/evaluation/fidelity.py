"""Generative fidelity: how far generated jet images are from simulated ones, and how far they could be.

The figures of the LAGAN study and of jetnet's evaluation (arXiv:2211.10295), on physics features
computed from the images with the jet-image functions (:mod:`datamodules.jet_observables`):

- :func:`wasserstein_1`: the 1-D Wasserstein-1 (earth mover's) distance between two samples
  (SciPy's exact empirical formula), of each feature: pixel intensity (all pixels pooled), jet
  mass, jet pT and tau21.
- :func:`frechet_distance`: the Frechet (2-Wasserstein) distance between Gaussians fitted to the
  two samples' feature vectors, ``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``; the features
  are first divided by the *reference* sample's standard deviations, so that MeV and a
  dimensionless tau21 weigh alike (jetnet's FPD standardises the same way).
- :func:`fidelity`: all of them for one pair of image samples, and :func:`floor`: the same
  between two independent halves of the reference sample, the distance a perfect generator
  would still show at that sample size (logged beside the generator's).

Every distance is >= 0 and lower is better.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from calolab.errors import CalolabError

#: the features, in the order of the Frechet distance's vectors
FEATURES = ("mass", "pt", "tau21")
#: pooled pixel intensities kept per sample for W1 (a seeded subsample beyond this)
MAX_PIXELS = 2_000_000
#: what every fidelity dict holds: W1 per feature and of pixel intensity, and the Frechet distance
DISTANCES = ("w1_pixel", *(f"w1_{f}" for f in FEATURES), "fpd")


def wasserstein_1(a: np.ndarray, b: np.ndarray) -> float:
    """W1 between the empirical distributions of 1-D samples ``a`` and ``b`` (any sizes >= 1)."""
    from scipy.stats import wasserstein_distance

    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise CalolabError(f"W1 needs two non-empty samples, but got sizes {a.size} and {b.size}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise CalolabError("W1 needs finite values, but a sample holds NaN or inf")
    return float(wasserstein_distance(a, b))


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature vectors ``x`` (N, F) and ``y`` (M, F)."""
    x, y = np.atleast_2d(np.asarray(x, np.float64)), np.atleast_2d(np.asarray(y, np.float64))
    if x.shape[1] != y.shape[1] or len(x) < 2 or len(y) < 2:
        raise CalolabError(
            f"the Frechet distance needs (N >= 2, F) samples of equal F, but got {x.shape} and {y.shape}"
        )
    mu = x.mean(0) - y.mean(0)
    sx, sy = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False))
    # Tr((Sx Sy)^(1/2)) = sum of the square roots of the eigenvalues of Sx Sy (real and >= 0 for
    # covariance matrices; rounding may leave tiny negative or imaginary parts)
    root = np.sqrt(np.clip(np.linalg.eigvals(sx @ sy).real, 0.0, None)).sum()
    return float(max(mu @ mu + np.trace(sx) + np.trace(sy) - 2.0 * root, 0.0))


def jet_features(images: np.ndarray, eta: np.ndarray, phi: np.ndarray, scale: float = 1.0) -> dict[str, np.ndarray]:
    """Mass, pT and tau21 of each image, from its first channel (pixels as massless particles).

    Args:
        images: (N, C, H, W) or (N, H, W) pT images.
        eta, phi: pixel centres (:func:`datamodules.jet_images.pixel_centres`).
        scale: multiplies mass and pT (e.g. 0.001: MeV images -> GeV).
    """
    from datamodules.jet_observables import image_mass, image_pt, image_tau21

    images = np.asarray(images, np.float32)
    images = images[:, 0] if images.ndim == 4 else images
    return {
        "mass": image_mass(images, eta, phi) * scale,
        "pt": image_pt(images, eta, phi) * scale,
        "tau21": image_tau21(images, eta, phi),
    }


def _pixels(images: np.ndarray, seed: int) -> np.ndarray:
    flat = np.asarray(images, np.float32).reshape(-1)
    if flat.size > MAX_PIXELS:
        flat = flat[np.random.default_rng(seed).choice(flat.size, MAX_PIXELS, replace=False)]
    return flat


def feature_distances(
    gen: dict[str, np.ndarray], ref: dict[str, np.ndarray], gen_pixels: np.ndarray, ref_pixels: np.ndarray, scale: float
) -> dict[str, float]:
    """W1 per feature and of pixel intensity, and the standardised Frechet distance, of ``gen`` vs ``ref``."""
    out = {"w1_pixel": wasserstein_1(gen_pixels * scale, ref_pixels * scale)}
    out.update({f"w1_{f}": wasserstein_1(gen[f], ref[f]) for f in FEATURES})
    ref_matrix = np.stack([ref[f] for f in FEATURES], axis=1)
    std = ref_matrix.std(0)
    std = np.where(std > 0, std, 1.0)
    out["fpd"] = frechet_distance(np.stack([gen[f] for f in FEATURES], axis=1) / std, ref_matrix / std)
    return out


def fidelity(
    generated: np.ndarray, simulated: np.ndarray, eta: np.ndarray, phi: np.ndarray, scale: float = 1.0, seed: int = 0
) -> dict[str, float]:
    """Every distance of :data:`DISTANCES` between generated and simulated images (N, [C,] H, W)."""
    gen = jet_features(generated, eta, phi, scale)
    ref = jet_features(simulated, eta, phi, scale)
    return feature_distances(gen, ref, _pixels(generated, seed), _pixels(simulated, seed), scale)


def halves(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint random halves of ``range(n)`` (seeded), the samples of the floor."""
    order = np.random.default_rng(seed).permutation(n)
    return order[: n // 2], order[n // 2 : 2 * (n // 2)]


def floor(
    simulated: np.ndarray, eta: np.ndarray, phi: np.ndarray, scale: float = 1.0, seed: int = 0
) -> dict[str, float]:
    """The distances between two independent halves of ``simulated``: what a perfect generator reaches.

    A generator compared with ``n`` simulated images is measured against ``n / 2`` here, so the
    floor is slightly pessimistic (larger) at equal sizes; the ratio to it is what is quoted.
    """
    if len(simulated) < 4:
        raise CalolabError(f"the floor needs at least 4 simulated images, but got {len(simulated)}")
    a, b = halves(len(simulated), seed)
    simulated = np.asarray(simulated)
    return fidelity(simulated[a], simulated[b], eta, phi, scale, seed)


def per_class(
    generated: np.ndarray,
    generated_label: np.ndarray,
    simulated: np.ndarray,
    simulated_label: np.ndarray,
    classes: Sequence[tuple[int, str]],
    eta: np.ndarray,
    phi: np.ndarray,
    scale: float = 1.0,
    seed: int = 0,
    with_floor: bool = True,
) -> dict[str, dict[str, float]]:
    """``{class name: {distance: value, "floor_<distance>": value}}`` for each ``(label, name)``."""
    out = {}
    for label, name in classes:
        gen, sim = generated[generated_label == label], simulated[simulated_label == label]
        if len(gen) < 2 or len(sim) < 4:
            raise CalolabError(
                f"class {name!r} (label {label}) has {len(sim)} simulated and {len(gen)} generated images; "
                "the fidelity needs at least 4 and 2"
            )
        values = fidelity(gen, sim, eta, phi, scale, seed)
        if with_floor:
            values.update({f"floor_{k}": v for k, v in floor(sim, eta, phi, scale, seed).items()})
        out[name] = values
    return out
